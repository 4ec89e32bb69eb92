"""Alembic's entry: migrations run on the connection the store hands over (never from a URL in
a file), under a lock so that gateways and workers starting together apply them once."""
from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, transaction_per_migration=True)
with context.begin_transaction():
    context.run_migrations()
