"""Kafka connection options from settings, for aiokafka clients and for faust."""

from __future__ import annotations

import ssl
from typing import Any

from guard.settings import KafkaSettings, SecurityProtocol


def ssl_context(k: KafkaSettings) -> ssl.SSLContext | None:
    if k.security_protocol not in (SecurityProtocol.SSL, SecurityProtocol.SASL_SSL):
        return None
    from aiokafka.helpers import create_ssl_context

    return create_ssl_context(
        cafile=str(k.ssl_cafile) if k.ssl_cafile else None,
        certfile=str(k.ssl_certfile) if k.ssl_certfile else None,
        keyfile=str(k.ssl_keyfile) if k.ssl_keyfile else None,
    )


def aiokafka_options(k: KafkaSettings) -> dict[str, Any]:
    """Keyword arguments shared by AIOKafkaProducer/Consumer/AdminClient."""
    opts: dict[str, Any] = {
        "bootstrap_servers": k.brokers,
        "client_id": k.client_id,
        "security_protocol": k.security_protocol.value,
    }
    context = ssl_context(k)
    if context is not None:
        opts["ssl_context"] = context
    if k.security_protocol in (SecurityProtocol.SASL_PLAINTEXT, SecurityProtocol.SASL_SSL):
        opts["sasl_mechanism"] = k.sasl_mechanism or "PLAIN"
        opts["sasl_plain_username"] = k.sasl_username
        opts["sasl_plain_password"] = (
            k.sasl_password.get_secret_value() if k.sasl_password else None
        )
    return opts


def faust_broker(k: KafkaSettings) -> tuple[list[str], Any]:
    """(broker URLs, broker_credentials) for ``faust.App``."""
    import faust

    urls = [f"kafka://{b.strip()}" for b in k.brokers.split(",") if b.strip()]
    context = ssl_context(k)
    credentials: Any = None
    if k.security_protocol in (SecurityProtocol.SASL_PLAINTEXT, SecurityProtocol.SASL_SSL):
        credentials = faust.SASLCredentials(
            username=k.sasl_username,
            password=k.sasl_password.get_secret_value() if k.sasl_password else None,
            mechanism=k.sasl_mechanism or "PLAIN",
            ssl_context=context,
        )
    elif context is not None:
        credentials = faust.SSLCredentials(context)
    return urls, credentials
