"""One Alembic revision a module, numbered in order; each is frozen once released."""
