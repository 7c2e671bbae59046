"""Traces, optional: OpenTelemetry spans for requests, pipeline steps and expert calls, one trace across processes.

Moesaic uses the OpenTelemetry API only when it is installed (the ``otel`` extra); without it every function here
is a no-op. Spans go wherever the process's tracer provider sends them: the host's (``opentelemetry-instrument
moesaic serve``, a test's in-memory exporter), or, when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set and no provider was
configured, an OTLP/HTTP exporter that ``configure_from_env`` installs (the server and each expert actor call it).
A call to an expert carries the caller's W3C ``traceparent`` in ``GenerationRequest.traceparent``, so the span the
actor opens for it joins the request's trace.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

try:  # the otel extra
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError:  # pragma: no cover - exercised where the extra is not installed
    trace = None  # type: ignore[assignment]

TRACER_NAME = "moesaic"
SERVICE_NAME_ENV = "OTEL_SERVICE_NAME"
ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_ENDPOINT"


def available() -> bool:
    """Whether the OpenTelemetry API is installed (otherwise nothing here records anything)."""
    return trace is not None


def configure_from_env(service_name: str) -> bool:
    """Export this process's spans over OTLP/HTTP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set and no tracer
    provider is configured yet; True when it installed one. Other ``OTEL_*`` variables apply as usual."""
    if trace is None or not os.environ.get(ENDPOINT_ENV):
        return False
    if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        return False  # the host configured one (opentelemetry-instrument, an embedding application)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({"service.name": os.environ.get(SERVICE_NAME_ENV, service_name)})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return True


@contextmanager
def span(
    name: str, attributes: Mapping[str, Any] | None = None, *, traceparent: str = "", server: bool = False
) -> Iterator[Any]:
    """A span around the block, child of the current one, or of ``traceparent`` when given (a remote caller)."""
    if trace is None or isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        yield None  # no OpenTelemetry, or no tracer provider set: every span would be a no-op one (and cost ~30 us)
        return
    parent = TraceContextTextMapPropagator().extract({"traceparent": traceparent}) if traceparent else None
    kind = trace.SpanKind.SERVER if server else trace.SpanKind.INTERNAL
    attributes = {key: value for key, value in (attributes or {}).items() if value is not None}
    with trace.get_tracer(TRACER_NAME).start_as_current_span(name, parent, kind, attributes) as current:
        yield current


def traceparent() -> str:
    """The current span as a W3C ``traceparent`` header value ("" when there is none, or no OpenTelemetry)."""
    if trace is None:
        return ""
    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    return carrier.get("traceparent", "")
