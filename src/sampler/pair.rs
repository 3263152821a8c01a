//! The two sides of a base/RL pair as one value, so slices that travel
//! together (log-probs, logits, sessions) never swap places in an argument
//! list.

/// One side of a pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    Base,
    Rl,
}

impl Side {
    /// The other side.
    pub fn other(self) -> Side {
        match self {
            Side::Base => Side::Rl,
            Side::Rl => Side::Base,
        }
    }

    /// How logs and errors name the side's model.
    pub fn name(self) -> &'static str {
        match self {
            Side::Base => "base",
            Side::Rl => "RL",
        }
    }
}

/// A value for each side of a pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pair<T> {
    pub base: T,
    pub rl: T,
}

impl<T> Pair<T> {
    pub fn new(base: T, rl: T) -> Pair<T> {
        Pair { base, rl }
    }

    /// The value of `side`.
    pub fn get(&self, side: Side) -> &T {
        match side {
            Side::Base => &self.base,
            Side::Rl => &self.rl,
        }
    }

    /// The value of `side`, mutably.
    pub fn get_mut(&mut self, side: Side) -> &mut T {
        match side {
            Side::Base => &mut self.base,
            Side::Rl => &mut self.rl,
        }
    }

    /// Both values by reference.
    pub fn as_ref(&self) -> Pair<&T> {
        Pair {
            base: &self.base,
            rl: &self.rl,
        }
    }

    /// Both values by mutable reference.
    pub fn as_mut(&mut self) -> Pair<&mut T> {
        Pair {
            base: &mut self.base,
            rl: &mut self.rl,
        }
    }

    /// The pair with the value of `side` first: (`side`, other side).
    pub fn split(self, side: Side) -> (T, T) {
        match side {
            Side::Base => (self.base, self.rl),
            Side::Rl => (self.rl, self.base),
        }
    }

    /// The inverse of [`Pair::split`]: `first` is the value of `side`.
    pub fn from_split(side: Side, first: T, other: T) -> Pair<T> {
        match side {
            Side::Base => Pair::new(first, other),
            Side::Rl => Pair::new(other, first),
        }
    }
}

impl<T> Pair<Option<T>> {
    /// `Some` when both sides are.
    pub fn both(self) -> Option<Pair<T>> {
        Some(Pair::new(self.base?, self.rl?))
    }

    /// Both values, as references, by `Option::as_deref`.
    pub fn as_deref(&self) -> Pair<Option<&T::Target>>
    where
        T: std::ops::Deref,
    {
        Pair::new(self.base.as_deref(), self.rl.as_deref())
    }

    /// Take both values, leaving `None`s.
    pub fn take(&mut self) -> Pair<Option<T>> {
        Pair::new(self.base.take(), self.rl.take())
    }
}

#[cfg(test)]
mod tests {
    use super::{Pair, Side};

    #[test]
    fn split_and_from_split_are_inverse_and_put_the_asked_side_first() {
        let p = Pair::new("b", "r");
        assert_eq!(p.split(Side::Base), ("b", "r"));
        assert_eq!(p.split(Side::Rl), ("r", "b"));
        for side in [Side::Base, Side::Rl] {
            let (first, other) = p.split(side);
            assert_eq!(Pair::from_split(side, first, other), p);
            assert_eq!(*p.get(side), first);
            assert_eq!(*p.get(side.other()), other);
        }
    }

    #[test]
    fn both_needs_both_sides() {
        assert_eq!(Pair::new(Some(1), Some(2)).both(), Some(Pair::new(1, 2)));
        assert_eq!(Pair::new(Some(1), None::<i32>).both(), None);
        let mut p = Pair::new(Some(vec![1.0]), None);
        assert_eq!(p.as_deref(), Pair::new(Some(&[1.0][..]), None));
        assert_eq!(p.take(), Pair::new(Some(vec![1.0]), None));
        assert_eq!(p, Pair::new(None, None));
    }
}
