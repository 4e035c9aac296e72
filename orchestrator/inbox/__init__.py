"""The inbox above the engine's human tasks: notifications of items (the notifier loop,
``notify``, sending ``webhooks`` and ``mail`` and keeping ``deliveries``) and the magic
links that let an outside reviewer decide one item (``links``, signed by ``signing``).

May import: the engine. Never the pipeline, the web, the terminal or the client.
"""
