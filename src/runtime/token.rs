//! dlogp's token id. llama.cpp's own type stays inside `src/runtime`; the
//! rest of the crate (decoder, server, evaluation, trainer, CLI) speaks
//! [`Token`], an index into the pair's shared vocabulary.

use llama_cpp_2::token::LlamaToken;

/// A token id of the (pair's shared) vocabulary.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct Token(pub u32);

impl Token {
    /// The id as an index into a vocabulary-sized slice.
    pub fn index(self) -> usize {
        self.0 as usize
    }

    /// llama.cpp's type, for the calls inside `src/runtime`. Ids above
    /// `i32::MAX` do not exist in any vocabulary llama.cpp loads; they map to
    /// -1, which llama.cpp rejects like any other invalid id.
    pub(crate) fn llama(self) -> LlamaToken {
        LlamaToken(i32::try_from(self.0).unwrap_or(-1))
    }

    /// From llama.cpp's type (its tokenizer only returns ids ≥ 0).
    pub(crate) fn from_llama(t: LlamaToken) -> Token {
        Token(u32::try_from(t.0).unwrap_or(u32::MAX))
    }
}

impl std::fmt::Display for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::Token;

    #[test]
    fn round_trips_through_llama_and_serializes_as_a_number() {
        for id in [0u32, 1, 49_151, i32::MAX as u32] {
            assert_eq!(Token::from_llama(Token(id).llama()), Token(id));
        }
        assert_eq!(Token(u32::MAX).llama().0, -1);
        assert_eq!(serde_json::to_string(&Token(7)).unwrap(), "7");
        assert_eq!(serde_json::from_str::<Token>("7").unwrap(), Token(7));
    }
}
