"""The app's Jinja environment: Flask's, with ``x.name`` on a plain dict read as the key straight away.

Jinja reads ``x.name`` as ``getattr(x, "name")`` and, when that raises AttributeError, as ``x["name"]``. The pages
pass their view models as plain dicts, so most of a page's ``x.name`` took the exception path (a raise and a catch
each). A plain dict (the type itself, not a subclass) has no instance attributes, so for a name that is not one of
the dict type's own attributes (``items``, ``get``...) ``getattr`` always raises and the key is what Jinja reads:
reading the key first gives the same value or the same undefined."""

from __future__ import annotations

from typing import Any

from flask.templating import Environment

_DICT_ATTRIBUTES = frozenset(dir(dict))


class DictFirstEnvironment(Environment):
    def getattr(self, obj: Any, attribute: str) -> Any:
        if type(obj) is dict and attribute not in _DICT_ATTRIBUTES:
            try:
                return obj[attribute]
            except KeyError:
                return self.undefined(obj=obj, name=attribute)
        return super().getattr(obj, attribute)
