"""The forced response to a positive self-administered screen (smart_app/followup/items.py): the item, the panel
that asks for a response, and the call the clinic tablet makes when a screen is done."""

from smart_app.followup.items import open_if_positive_self_screen

__all__ = ["open_if_positive_self_screen"]
