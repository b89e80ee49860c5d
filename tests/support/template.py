"""The template reader lives in local/template.py (the local stack provisions moto with it too);
tests import it from here."""

from local.template import (  # noqa: F401 - re-exported for the tests
    TEMPLATE,
    CfnTag,
    create_key,
    create_table,
    create_topic,
    queue_attributes,
    resource,
    resources_of_type,
    template,
)
