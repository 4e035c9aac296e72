"""The inbox above the engine's human tasks: notifications of items (mail and
webhooks, ``notify``) and the magic links that let an outside reviewer decide one item
(``links``, signed by ``signing``).

May import: the engine. Never the pipeline, the web, the terminal or the client.
"""
