"""Schemas of the custom resources under deploy/examples, for offline validation.

The Prometheus Operator's CRDs are not bundled with ``kubernetes-validate``,
and no Python or Debian package ships them. What is checked here is the part
of ``monitoring.coreos.com/v1`` PodMonitor that fseg's example uses, with the
field names and types of the CRD's OpenAPI schema, made strict: any field
outside this subset is an error (a cluster would silently prune a misspelt
one). The example was also checked once against the full CRD schema as
compiled in the npm package ``@kubernetes-models/prometheus-operator`` 6.0.0
(see the issue 19 report); that check needs Node and is not part of the suite.
"""

from __future__ import annotations

import jsonschema

#: The CRD's pattern for durations (``30s``, ``1m30s``).
DURATION = {
    "type": "string",
    "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?"
    r"(([0-9]+)s)?(([0-9]+)ms)?)$",
}
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
LABEL_SELECTOR = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "matchLabels": STRING_MAP,
        "matchExpressions": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["key", "operator"],
                "properties": {
                    "key": {"type": "string"},
                    "operator": {"type": "string"},
                    "values": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
    },
}
POD_METRICS_ENDPOINT = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "port": {"type": "string"},
        "path": {"type": "string"},
        "scheme": {"enum": ["http", "https", "HTTP", "HTTPS"]},
        "interval": DURATION,
        "scrapeTimeout": DURATION,
        "honorLabels": {"type": "boolean"},
        "honorTimestamps": {"type": "boolean"},
        "params": {"type": "object"},
        "relabelings": {"type": "array", "items": {"type": "object"}},
        "metricRelabelings": {"type": "array", "items": {"type": "object"}},
    },
}
POD_MONITOR = {
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PodMonitor"},
        "metadata": {
            "type": "object",
            "additionalProperties": False,
            "required": ["name", "namespace"],
            "properties": {
                "name": {"type": "string"},
                "namespace": {"type": "string"},
                "labels": STRING_MAP,
                "annotations": STRING_MAP,
            },
        },
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["selector", "podMetricsEndpoints"],
            "properties": {
                "selector": LABEL_SELECTOR,
                "namespaceSelector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "any": {"type": "boolean"},
                        "matchNames": {"type": "array", "items": {"type": "string"}},
                    },
                },
                "podMetricsEndpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": POD_METRICS_ENDPOINT,
                },
                "jobLabel": {"type": "string"},
                "podTargetLabels": {"type": "array", "items": {"type": "string"}},
                "sampleLimit": {"type": "integer", "minimum": 0},
            },
        },
    },
}
CUSTOM_RESOURCES = {("monitoring.coreos.com/v1", "PodMonitor"): POD_MONITOR}


def custom_resource_problems(doc: dict) -> list[str] | None:
    """What is wrong with ``doc`` by its custom resource's schema; None: not one of them."""
    schema = CUSTOM_RESOURCES.get((doc.get("apiVersion"), doc.get("kind")))
    if schema is None:
        return None
    validator = jsonschema.Draft202012Validator(schema)
    return [
        f"{'.'.join(map(str, error.path)) or '(top)'}: {error.message}"
        for error in validator.iter_errors(doc)
    ]
