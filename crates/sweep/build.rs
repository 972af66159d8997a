//! Adds the libtorch rpath (see `torch-rpath`): this crate needs no tensor, but it links the
//! `trainer` crate for `RunConfig`, and with it libtorch.
fn main() {
    torch_rpath::emit();
}
