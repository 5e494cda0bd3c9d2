//! Naming a configured provider. The configuration, the engine and the glue
//! each keep something per provider (its settings, its keys and revocation
//! list, its fetches); a [`ProviderId`] names one provider in all of them and
//! a [`PerProvider`] list is only ever read through one, so no code indexes a
//! list by a bare number that could belong to another list.

/// One configured provider. Made only when the configuration builds its
/// provider list ([`PerProvider::from_vec`]) and handed out by that list;
/// every per-provider list of one configuration is mapped from it
/// ([`PerProvider::map`]), so an id of one names the same provider in all.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ProviderId(usize);

impl ProviderId {
    /// The first provider in configuration order: a valid configuration
    /// always has one (for fixtures that build a token by hand).
    pub const FIRST: ProviderId = ProviderId(0);
}

/// One `T` per configured provider, in configuration order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PerProvider<T> {
    items: Vec<T>,
}

impl<T> PerProvider<T> {
    /// The configuration's own list: the one place ids come from.
    pub(crate) fn from_vec(items: Vec<T>) -> Self {
        PerProvider { items }
    }

    /// `None` only for an id of another configuration.
    pub fn get(&self, id: ProviderId) -> Option<&T> {
        self.items.get(id.0)
    }

    pub fn get_mut(&mut self, id: ProviderId) -> Option<&mut T> {
        self.items.get_mut(id.0)
    }

    /// The first provider whose item satisfies `pred`.
    pub fn find(&self, pred: impl Fn(&T) -> bool) -> Option<ProviderId> {
        self.items.iter().position(pred).map(ProviderId)
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.items.iter()
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.items.iter_mut()
    }

    /// Every item with the id of its provider.
    pub fn with_ids(&self) -> impl Iterator<Item = (ProviderId, &T)> {
        self.items
            .iter()
            .enumerate()
            .map(|(i, item)| (ProviderId(i), item))
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Another per-provider list of the same providers: the ids of this one
    /// name the same providers in it.
    pub fn map<U>(&self, mut f: impl FnMut(ProviderId, &T) -> U) -> PerProvider<U> {
        PerProvider {
            items: self.with_ids().map(|(id, item)| f(id, item)).collect(),
        }
    }
}

impl<'a, T> IntoIterator for &'a PerProvider<T> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;

    fn into_iter(self) -> Self::IntoIter {
        self.items.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mapped_list_answers_the_same_ids() {
        let names = PerProvider::from_vec(vec!["main", "partner"]);
        let partner = names.find(|n| *n == "partner").unwrap();
        let lengths = names.map(|_, n| n.len());
        assert_eq!(names.get(partner), Some(&"partner"));
        assert_eq!(lengths.get(partner), Some(&7));
        assert_eq!(lengths.get(ProviderId::FIRST), Some(&4));
        let ids: Vec<ProviderId> = names.with_ids().map(|(id, _)| id).collect();
        assert_eq!(ids, vec![ProviderId::FIRST, partner]);
        assert_eq!(names.find(|n| n.is_empty()), None);
    }

    #[test]
    fn an_id_of_a_longer_list_finds_nothing_rather_than_panicking() {
        let long = PerProvider::from_vec(vec![1, 2, 3]);
        let short = PerProvider::from_vec(vec![1]);
        let third = long.find(|n| *n == 3).unwrap();
        assert_eq!(short.get(third), None);
    }
}
