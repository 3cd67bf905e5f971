"""The start of a probe script (run with `python -c`, the collector's endpoint as its argument):
the companion's export pipeline with a log buffer of its own, its drops in `drops`."""

LOG_PIPELINE = """
import json, os, sys
os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = sys.argv[1]
os.environ["AWS_LAMBDA_FUNCTION_NAME"] = "orders"
from lambdawrap.companion.exporting import Pipeline, make_exporters
from lambdawrap.companion.log_buffer import LogBuffer
from lambdawrap.companion.resource import build_resource
from lambdawrap.shared.settings import Settings
settings = Settings.from_env()
drops = []
pipeline = Pipeline(make_exporters(settings), build_resource(settings, "012345678912"), lambda reason, count=1: drops.append((reason, count)))
pipeline.logs = LogBuffer(lambda reason, count: drops.append((reason, count)))
"""
