"""lambdawrap's samplers (shared.sampling, which the function's process uses, where the SDK
cannot be imported) decide exactly as the OpenTelemetry SDK's samplers of the same name."""

from __future__ import annotations

import logging
import random

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import sampling as sdk
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from lambdawrap.handler.trace_context import SpanContext as RemoteContext
from lambdawrap.shared.sampling import make_sampler
from lambdawrap.shared.settings import SAMPLERS, Settings


def sdk_sampler(name: str, ratio: float) -> sdk.Sampler:
    roots = {"always_on": sdk.ALWAYS_ON, "always_off": sdk.ALWAYS_OFF, "traceidratio": sdk.TraceIdRatioBased(ratio)}
    return sdk.ParentBased(roots[name[len("parentbased_") :]]) if name.startswith("parentbased_") else roots[name]


@pytest.mark.parametrize("name", SAMPLERS)
@pytest.mark.parametrize("ratio", [0.0, 0.001, 0.25, 0.5, 0.999, 1.0])
def test_same_decisions_as_the_sdk(name, ratio):
    rng = random.Random(f"{name}{ratio}")
    ours, theirs = make_sampler(name, ratio), sdk_sampler(name, ratio)
    for _ in range(2000):
        trace_id = rng.getrandbits(128) or 1
        parent = None
        if rng.random() < 0.5:
            parent = RemoteContext(trace_id, rng.getrandbits(64) or 1, rng.random() < 0.5)
        context = None
        if parent is not None:
            flags = TraceFlags(TraceFlags.SAMPLED if parent.sampled else TraceFlags.DEFAULT)
            context = trace.set_span_in_context(NonRecordingSpan(SpanContext(trace_id, parent.span_id, is_remote=True, trace_flags=flags)))
        expected = theirs.should_sample(context, trace_id, "invocation").decision == sdk.Decision.RECORD_AND_SAMPLE
        assert ours(trace_id, parent) is expected, (name, ratio, hex(trace_id), parent)


def test_the_default_is_parent_based_always_on():
    settings = Settings.from_env({})
    sampled = make_sampler(settings.sampler, settings.sampler_ratio)
    assert sampled(123, None) is True
    assert sampled(123, RemoteContext(123, 4, False)) is False
    assert sampled(123, RemoteContext(123, 4, True)) is True


def test_settings_read_the_standard_variables():
    s = Settings.from_env({"OTEL_TRACES_SAMPLER": "ParentBased_TraceIdRatio", "OTEL_TRACES_SAMPLER_ARG": "0.1"})
    assert (s.sampler, s.sampler_ratio) == ("parentbased_traceidratio", 0.1)
    s = Settings.from_env({"OTEL_TRACES_SAMPLER": "jaeger_remote", "OTEL_TRACES_SAMPLER_ARG": "2"}, warn=False)
    assert (s.sampler, s.sampler_ratio) == ("parentbased_always_on", 1.0)


@pytest.mark.parametrize(
    "sampler, arg, arg_warnings",
    [
        ("xray", "endpoint=http://localhost:2000,polling_interval=300", 0),
        ("parentbased_jaeger_remote", "endpoint=http://localhost:14250", 0),
        ("always_on", "abc", 0),
        ("parentbased_always_off", "-1", 0),
        ("traceidratio", "abc", 1),
        ("parentbased_traceidratio", "1.5", 1),
    ],
)
def test_the_argument_is_read_only_beside_a_sampler_that_takes_one_as_in_the_sdk(monkeypatch, caplog, sampler, arg, arg_warnings):
    # GIVEN a sampler and an argument WHEN the SDK and lambdawrap read them THEN each warns of
    # the argument only where the sampler takes one (before: lambdawrap warned of an X-Ray
    # sampler's argument too, "using the default 1.0", beside its warning of the sampler)
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", sampler)
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", arg)
    with caplog.at_level(logging.WARNING):
        sdk._get_from_env_or_default()
        theirs = [r for r in caplog.records if "TRACES_SAMPLER_ARG" in r.getMessage()]
        caplog.clear()
        settings = Settings.from_env()
        ours = [r for r in caplog.records if "OTEL_TRACES_SAMPLER_ARG" in r.getMessage()]
    assert len(ours) == len(theirs) == arg_warnings, (ours, theirs)
    assert settings.sampler_ratio == 1.0
