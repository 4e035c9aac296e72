"""Jinja2 templates shipped with taskloom."""
