"""What one ``dpt serve`` process was started with; shared by the API and the explorer."""

from __future__ import annotations

from dataclasses import dataclass, field

from dpt_core.config import Settings, get_settings

#: Largest request body accepted by default (bytes); larger ones get 413.
DEFAULT_MAX_BODY = 1024 * 1024


@dataclass(frozen=True)
class ServerConfig:
    """:param read_only: reject every write (405); pages and the read API still answer.
    :param token: ``DPT_SERVER_TOKEN``: writes need ``Authorization: Bearer <token>``.
    :param max_body: request bodies above this many bytes get 413.
    :param settings: the dpt settings (database, spool, ...) the server records with.
    """

    read_only: bool = False
    token: str | None = None
    max_body: int = DEFAULT_MAX_BODY
    settings: Settings = field(default_factory=get_settings)
