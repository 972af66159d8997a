//! Token grammar, vocabulary and strict tokenisation.

use std::collections::HashMap;

use crate::DataError;

/// The functor token.
pub const FUNCTOR: &str = "<f>";
/// The inverse-functor token.
pub const FUNCTOR_INVERSE: &str = "<f_inv>";

/// What a token stands for, parsed from its spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TokenKind {
    /// `<e_N>`: entity number N.
    Entity(u32),
    /// `<r_N>`: relation number N.
    Relation(u32),
    /// `<f>`.
    Functor,
    /// `<f_inv>`.
    FunctorInverse,
}

impl TokenKind {
    /// Parses one token spelling. Numbers are canonical decimals (`<e_0>`, `<r_17>`; not
    /// `<e_01>` or `<e_+1>`), so every token has exactly one spelling.
    pub fn parse(token: &str) -> Option<TokenKind> {
        match token {
            FUNCTOR => return Some(TokenKind::Functor),
            FUNCTOR_INVERSE => return Some(TokenKind::FunctorInverse),
            _ => {}
        }
        let inner = token.strip_prefix('<')?.strip_suffix('>')?;
        let (make, digits): (fn(u32) -> TokenKind, &str) = if let Some(d) = inner.strip_prefix("e_")
        {
            (TokenKind::Entity, d)
        } else if let Some(d) = inner.strip_prefix("r_") {
            (TokenKind::Relation, d)
        } else {
            return None;
        };
        let canonical = !digits.is_empty()
            && digits.bytes().all(|b| b.is_ascii_digit())
            && (digits == "0" || !digits.starts_with('0'));
        if !canonical {
            return None;
        }
        digits.parse().ok().map(make)
    }

    /// The token's spelling.
    pub fn spelling(self) -> String {
        match self {
            TokenKind::Entity(n) => format!("<e_{n}>"),
            TokenKind::Relation(n) => format!("<r_{n}>"),
            TokenKind::Functor => FUNCTOR.to_string(),
            TokenKind::FunctorInverse => FUNCTOR_INVERSE.to_string(),
        }
    }
}

/// The token list of a dataset; a token's id is its index.
///
/// Built by the generator as entities, relations, `<f>`, then `<f_inv>` when present (the
/// original's order); a vocabulary read from disk may list the same tokens in any order, but
/// every entry must be a well-formed token and appear once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vocab {
    tokens: Vec<String>,
    kinds: Vec<TokenKind>,
    index: HashMap<String, u32>,
}

impl Vocab {
    /// The vocabulary the generator writes: `<e_0>`…`<e_{N-1}>`, `<r_0>`…`<r_{R-1}>`, `<f>`,
    /// and `<f_inv>` when `include_f_inverse`.
    ///
    /// # Panics
    /// If the vocabulary would exceed `u32::MAX` tokens ([`crate::DataConfig::validate`] rejects
    /// such sizes first).
    pub fn build(num_entities: usize, num_relations: usize, include_f_inverse: bool) -> Self {
        let to_u32 = |n: usize| u32::try_from(n).expect("vocabulary size checked by validate()");
        let mut kinds: Vec<TokenKind> = (0..to_u32(num_entities))
            .map(TokenKind::Entity)
            .chain((0..to_u32(num_relations)).map(TokenKind::Relation))
            .collect();
        kinds.push(TokenKind::Functor);
        if include_f_inverse {
            kinds.push(TokenKind::FunctorInverse);
        }
        let tokens = kinds.iter().map(|k| k.spelling()).collect();
        Self::from_parts(tokens, kinds)
    }

    /// A vocabulary from a token list such as `vocab.json`.
    ///
    /// # Errors
    /// [`DataError::VocabEntry`] with the index of the first entry that is not a well-formed
    /// token or repeats an earlier one, or when the list is longer than `u32` ids allow.
    pub fn from_tokens(tokens: Vec<String>) -> Result<Self, DataError> {
        if u32::try_from(tokens.len()).is_err() {
            return Err(DataError::VocabEntry {
                index: tokens.len(),
                token: String::new(),
                reason: "more tokens than u32 ids".into(),
            });
        }
        let mut kinds = Vec::with_capacity(tokens.len());
        let mut seen = HashMap::with_capacity(tokens.len());
        for (i, tok) in tokens.iter().enumerate() {
            let Some(kind) = TokenKind::parse(tok) else {
                return Err(DataError::VocabEntry {
                    index: i,
                    token: tok.clone(),
                    reason: "not a token: expected <e_N>, <r_N>, <f> or <f_inv>".into(),
                });
            };
            if let Some(first) = seen.insert(tok.as_str(), i) {
                return Err(DataError::VocabEntry {
                    index: i,
                    token: tok.clone(),
                    reason: format!("repeats entry {first}"),
                });
            }
            kinds.push(kind);
        }
        Ok(Self::from_parts(tokens, kinds))
    }

    fn from_parts(tokens: Vec<String>, kinds: Vec<TokenKind>) -> Self {
        let index = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        Vocab {
            tokens,
            kinds,
            index,
        }
    }

    /// The id of a token spelling.
    pub fn id(&self, token: &str) -> Option<u32> {
        self.index.get(token).copied()
    }

    /// The spelling of a token id.
    pub fn token(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    /// What a token id stands for.
    pub fn kind(&self, id: u32) -> Option<TokenKind> {
        self.kinds.get(id as usize).copied()
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// True when there are no tokens.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// All spellings, in id order.
    pub fn tokens(&self) -> &[String] {
        &self.tokens
    }

    /// Id of `<f>`, if present.
    pub fn functor_id(&self) -> Option<u32> {
        self.id(FUNCTOR)
    }

    /// Id of `<f_inv>`, if present.
    pub fn functor_inverse_id(&self) -> Option<u32> {
        self.id(FUNCTOR_INVERSE)
    }

    /// Ids of all entity tokens, in id order.
    pub fn entity_ids(&self) -> Vec<u32> {
        self.ids_where(|k| matches!(k, TokenKind::Entity(_)))
    }

    /// Ids of all relation tokens, in id order.
    pub fn relation_ids(&self) -> Vec<u32> {
        self.ids_where(|k| matches!(k, TokenKind::Relation(_)))
    }

    fn ids_where(&self, keep: impl Fn(TokenKind) -> bool) -> Vec<u32> {
        (0u32..)
            .zip(&self.kinds)
            .filter(|&(_, &k)| keep(k))
            .map(|(i, _)| i)
            .collect()
    }

    /// True when `id` is an entity token.
    pub fn is_entity(&self, id: u32) -> bool {
        matches!(self.kind(id), Some(TokenKind::Entity(_)))
    }

    /// True when `id` is a relation token.
    pub fn is_relation(&self, id: u32) -> bool {
        matches!(self.kind(id), Some(TokenKind::Relation(_)))
    }

    /// Splits `text` into token ids. Strict: the text must be exactly a concatenation of
    /// vocabulary tokens, with nothing before, between or after them.
    ///
    /// # Errors
    /// [`DataError::Token`] with the byte offset of the first piece that is not a vocabulary
    /// token (also for an empty text).
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>, DataError> {
        let fail = |offset: usize, reason: String| DataError::Token {
            text: text.to_string(),
            offset,
            reason,
        };
        if text.is_empty() {
            return Err(fail(0, "empty text".into()));
        }
        let mut ids = Vec::new();
        let mut pos = 0;
        while pos < text.len() {
            let rest = &text[pos..];
            if !rest.starts_with('<') {
                let ch = rest.chars().next().unwrap_or('?');
                return Err(fail(pos, format!("expected '<', found {ch:?}")));
            }
            let Some(end) = rest.find('>') else {
                return Err(fail(pos, format!("unterminated token {rest:?}")));
            };
            let piece = &rest[..=end];
            match self.id(piece) {
                Some(id) => ids.push(id),
                None if TokenKind::parse(piece).is_some() => {
                    return Err(fail(pos, format!("{piece} is not in the vocabulary")));
                }
                None => return Err(fail(pos, format!("{piece:?} is not a token"))),
            }
            pos += end + 1;
        }
        Ok(ids)
    }

    /// Concatenates the spellings of `ids`; `None` if an id is out of range.
    pub fn decode(&self, ids: &[u32]) -> Option<String> {
        let mut s = String::new();
        for &id in ids {
            s.push_str(self.token(id)?);
        }
        Some(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_grammar_accepts_canonical_spellings_only() {
        assert_eq!(TokenKind::parse("<e_0>"), Some(TokenKind::Entity(0)));
        assert_eq!(
            TokenKind::parse("<r_9999>"),
            Some(TokenKind::Relation(9999))
        );
        assert_eq!(TokenKind::parse("<f>"), Some(TokenKind::Functor));
        assert_eq!(TokenKind::parse("<f_inv>"), Some(TokenKind::FunctorInverse));
        for bad in [
            "<e_01>",
            "<e_>",
            "<e_-1>",
            "<e_+1>",
            "e_1",
            "<x_1>",
            "<e_1",
            "<E_1>",
            "<e_ 1>",
            "<e_99999999999>",
            "",
        ] {
            assert_eq!(TokenKind::parse(bad), None, "{bad}");
        }
        for k in [
            TokenKind::Entity(12),
            TokenKind::Relation(0),
            TokenKind::Functor,
            TokenKind::FunctorInverse,
        ] {
            assert_eq!(TokenKind::parse(&k.spelling()), Some(k));
        }
    }

    #[test]
    fn built_vocab_has_the_original_order() {
        let v = Vocab::build(3, 2, true);
        assert_eq!(
            v.tokens(),
            [
                "<e_0>", "<e_1>", "<e_2>", "<r_0>", "<r_1>", "<f>", "<f_inv>"
            ]
        );
        assert_eq!(v.functor_id(), Some(5));
        assert_eq!(v.functor_inverse_id(), Some(6));
        assert_eq!(v.entity_ids(), [0, 1, 2]);
        assert_eq!(v.relation_ids(), [3, 4]);
        assert!(v.is_entity(2) && !v.is_entity(3) && v.is_relation(3));
        let no_inv = Vocab::build(10, 10_000, false);
        assert_eq!(no_inv.len(), 10_011);
        assert_eq!(no_inv.functor_inverse_id(), None);
    }

    #[test]
    fn tokenize_round_trips_and_is_strict() {
        let v = Vocab::build(10, 20, false);
        let ids = v.tokenize("<e_3><r_17><e_5>").unwrap();
        assert_eq!(ids, [3, 27, 5]);
        assert_eq!(v.decode(&ids).unwrap(), "<e_3><r_17><e_5>");
        assert_eq!(v.tokenize("<e_3><f>").unwrap(), [3, 30]);
        for (bad, offset) in [
            ("", 0),
            ("<e_3> <r_1>", 5),
            ("x<e_3>", 0),
            ("<e_3><r_20>", 5),
            ("<e_3><f_inv>", 5),
            ("<e_3><r_1", 5),
            ("<e_3><e_03>", 5),
            ("<e_3><r_1>>", 10),
        ] {
            match v.tokenize(bad) {
                Err(DataError::Token {
                    text, offset: o, ..
                }) => {
                    assert_eq!(text, bad);
                    assert_eq!(o, offset, "{bad}");
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn from_tokens_rejects_bad_and_repeated_entries() {
        let ok = Vocab::from_tokens(vec!["<r_0>".into(), "<e_0>".into()]).unwrap();
        assert_eq!(ok.id("<e_0>"), Some(1));
        match Vocab::from_tokens(vec!["<e_0>".into(), "<e_1>".into(), "<e_0>".into()]) {
            Err(DataError::VocabEntry { index: 2, .. }) => {}
            other => panic!("{other:?}"),
        }
        match Vocab::from_tokens(vec!["<e_0>".into(), "cat".into()]) {
            Err(DataError::VocabEntry {
                index: 1, token, ..
            }) => assert_eq!(token, "cat"),
            other => panic!("{other:?}"),
        }
    }
}
