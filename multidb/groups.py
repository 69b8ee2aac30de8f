"""Replica groups: each primary's replicas, and the primary each model lives on.

``MULTIDB_REPLICA_GROUPS`` maps every primary alias to its replicas (a list,
or ``{alias: weight}`` as ``REPLICA_DATABASES`` takes).  ``REPLICA_DATABASES``
stays the shorthand for the ``default`` group.  ``MULTIDB_PRIMARY_FOR`` says
which primary a model lives on: a mapping from app label (or
``"app_label.ModelName"``) to a primary alias, or the dotted path of a
callable ``(model, **hints) -> alias | None``.  Unmapped models live on
``default``.

A site with one primary sets neither and pays nothing: ``active()`` is
False, and the routers keep their single-group methods.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from django.core.signals import setting_changed
from django.utils.module_loading import import_string

from .conf import DEFAULT_DB_ALIAS, REPLICA_SETTINGS, conf, replica_weights

#: The settings that shape the groups.
GROUP_SETTINGS = REPLICA_SETTINGS | {"MULTIDB_REPLICA_GROUPS", "MULTIDB_PRIMARY_FOR"}


class _Layout:
    """The groups as configured, worked out once per settings change."""

    __slots__ = ("weights", "primary_of", "mapping", "chooser")

    def __init__(self) -> None:
        raw = conf.REPLICA_GROUPS or {}
        # Not raw.get(..., conf.REPLICA_DATABASES): reading that setting
        # warns when only the deprecated SLAVE_DATABASES is set.
        #: ``{primary: {replica: weight}}``, ``default`` first.
        self.weights: dict[str, dict[str, int]] = {
            DEFAULT_DB_ALIAS: replica_weights(
                raw[DEFAULT_DB_ALIAS]  # noqa: SIM401
                if DEFAULT_DB_ALIAS in raw
                else conf.REPLICA_DATABASES
            )
        }
        for primary, replicas in raw.items():
            if primary != DEFAULT_DB_ALIAS:
                self.weights[primary] = replica_weights(replicas)
        #: Every primary and replica alias: the primary of its group.
        self.primary_of: dict[str, str] = {}
        for primary, weights in self.weights.items():
            self.primary_of[primary] = primary
            for alias in weights:
                self.primary_of.setdefault(alias, primary)
        target = conf.PRIMARY_FOR
        self.mapping: dict[str, str] = {}
        self.chooser: Callable[..., str | None] | None = None
        if isinstance(target, str):
            self.chooser = import_string(target)
        elif isinstance(target, Mapping):
            self.mapping = {str(k).lower(): v for k, v in target.items()}


_layout: _Layout | None = None


def layout() -> _Layout:
    global _layout
    if _layout is None:
        _layout = _Layout()
        for hook in on_change:
            hook()
    return _layout


_active: bool | None = None


def active() -> bool:
    """Whether any model may live elsewhere than on ``default``.

    Worked out from the two settings alone (``REPLICA_DATABASES`` is not
    read: it may be the deprecated ``SLAVE_DATABASES``, which warns).
    """
    global _active
    if _active is None:
        raw = conf.REPLICA_GROUPS or {}
        target = conf.PRIMARY_FOR
        _active = (
            any(primary != DEFAULT_DB_ALIAS for primary in raw)
            or isinstance(target, str)
            or (
                isinstance(target, Mapping)
                and any(alias != DEFAULT_DB_ALIAS for alias in target.values())
            )
        )
    return _active


def groups() -> dict[str, dict[str, int]]:
    """``{primary: {replica: weight}}``, ``default`` first."""
    return layout().weights


def replicas_of(primary: str) -> dict[str, int]:
    """``primary``'s replicas with their weights (none for an alias that is
    not a primary)."""
    return layout().weights.get(primary, {})


def is_primary(alias: str) -> bool:
    """Whether ``alias`` is ``default`` or another group's primary."""
    return alias in layout().weights


def primary_of(alias: str) -> str | None:
    """The primary of the group ``alias`` (a primary or a replica) is in."""
    return layout().primary_of.get(alias)


#: ``{model class: primary}`` for a mapping (a callable may answer
#: differently for each call: a tenant per request).  Cleared, never
#: replaced: the routers hold it.
KNOWN_PRIMARIES: dict[Any, str] = {}
_by_model = KNOWN_PRIMARIES


def primary_for(model: Any, **hints: Any) -> str:
    """The primary ``model`` lives on (``MULTIDB_PRIMARY_FOR``)."""
    try:
        return _by_model[model]
    except (KeyError, TypeError):
        pass
    current = layout()
    if current.chooser is not None:
        return current.chooser(model, **hints) or DEFAULT_DB_ALIAS
    meta = getattr(model, "_meta", None)
    if meta is None:
        return DEFAULT_DB_ALIAS
    alias = _mapped(current.mapping, meta.app_label, meta.model_name)
    if alias == DEFAULT_DB_ALIAS:
        # The very object: the router tells it by identity.
        alias = DEFAULT_DB_ALIAS
    _by_model[model] = alias
    return alias


def primary_for_app(app_label: str, model_name: str | None, **hints: Any) -> str:
    """The primary for a migration of ``app_label`` (``allow_migrate``)."""
    current = layout()
    if current.chooser is not None:
        hints = {**hints, "app_label": app_label, "model_name": model_name}
        return current.chooser(hints.pop("model", None), **hints) or DEFAULT_DB_ALIAS
    return _mapped(current.mapping, app_label, model_name)


def _mapped(mapping: dict[str, str], app_label: str, model_name: str | None) -> str:
    if model_name is not None:
        alias = mapping.get(f"{app_label}.{model_name}".lower())
        if alias is not None:
            return alias
    return mapping.get(app_label.lower(), DEFAULT_DB_ALIAS)


def forget() -> None:
    """Read the groups' settings afresh on next use."""
    global _layout, _active
    _layout = _active = None
    _by_model.clear()
    for hook in on_change:
        hook()


def _reset(*, setting: str, **kwargs: Any) -> None:
    if setting in GROUP_SETTINGS:
        forget()


#: Called when the groups' settings change (the routers swap their methods).
on_change: list[Callable[[], None]] = []

setting_changed.connect(_reset, dispatch_uid="multidb.groups")
