-- Admin listings page by `(created_at, id)` (store/page.rs): each page is
-- read from these indexes, not by sorting the whole table.
CREATE INDEX users_by_creation ON users(created_at, id);
CREATE INDEX sessions_by_user_creation ON sessions(user_id, created_at, id);
DROP INDEX sessions_by_user;
