"""What Jinja compiles in a test: a start that loads its templates' code compiles none."""

from __future__ import annotations

from typing import Any


def counting_compiles(app: Any, monkeypatch: Any) -> list[str]:
    """The names of the templates ``app``'s Jinja compiles from now on (a load of compiled code compiles nothing)."""
    names: list[str] = []
    compile_ = app.jinja_env.compile

    def counted(source, name=None, filename=None, *args, **kwargs):
        names.append(name)
        return compile_(source, name, filename, *args, **kwargs)

    monkeypatch.setattr(app.jinja_env, "compile", counted)
    return names
