-- The key-encryption keys in the order instances first put them in use as
-- `kek.key`. During a rotation's rollout, instances that have the new key
-- only as `kek.previous` leave alone what is sealed with it (it came after
-- theirs), instead of re-sealing it under the key being retired.
CREATE TABLE kek_succession (
    position INTEGER PRIMARY KEY AUTOINCREMENT,
    kek_id TEXT NOT NULL UNIQUE
);
