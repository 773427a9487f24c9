"""The social-work queue: scope, views, retention."""
