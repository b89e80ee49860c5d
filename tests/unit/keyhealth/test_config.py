"""Settings come from the environment once and fail loudly when wrong."""

import pytest

from keyhealth.config import ConfigError, Settings


def test_defaults_point_at_the_real_exchanges():
    settings = Settings.from_env({})
    assert settings.url("BINANCE_BASE_URL") == "https://api.binance.com"
    assert settings.url("BINANCE_FUTURES_BASE_URL") == "https://fapi.binance.com"
    assert settings.url("BITGET_BASE_URL") == "https://api.bitget.com"
    assert settings.url("BINGX_BASE_URL") == "https://open-api.bingx.com"
    assert settings.secret_prefix == "keyhealth/"
    assert settings.audit_budget_share == 0.5
    assert settings.egress_ips == ()


def test_environment_overrides_are_parsed():
    settings = Settings.from_env(
        {
            "EGRESS_IPS": " 203.0.113.10, 203.0.113.11 ",
            "BINGX_BASE_URL": "http://127.0.0.1:9000/",
            "AUDIT_BUDGET_SHARE": "0.8",
            "TABLE_NAME": "bindings",
            "KEYHEALTH_EGRESS_SOURCE": "127.0.0.2",
        }
    )
    assert settings.egress_ips == ("203.0.113.10", "203.0.113.11")
    assert settings.url("BINGX_BASE_URL") == "http://127.0.0.1:9000"
    assert settings.audit_budget_share == 0.8
    assert settings.table_name == "bindings"
    assert settings.egress_source_address == "127.0.0.2"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"EGRESS_IPS": "203.0.113.10,nat-gateway"}, "EGRESS_IPS"),
        ({"AUDIT_BUDGET_SHARE": "half"}, "AUDIT_BUDGET_SHARE"),
        ({"AUDIT_BUDGET_SHARE": "1.5"}, "AUDIT_BUDGET_SHARE"),
        ({"BITGET_BASE_URL": "api.bitget.com"}, "BITGET_BASE_URL"),
        ({"CREDENTIAL_STORE": "vault"}, "CREDENTIAL_STORE"),
        ({"PLANNED_EGRESS_IPS": "203.0.113.20"}, "PLANNED_EGRESS_IPS"),
        ({"PLANNED_EGRESS_IPS": "nat@2027-01-15"}, "PLANNED_EGRESS_IPS"),
        ({"PLANNED_EGRESS_IPS": "203.0.113.20@15/01/2027"}, "PLANNED_EGRESS_IPS"),
        ({"AUDIT_MODE": "hourly"}, "AUDIT_MODE"),
        ({"EGRESS_IPS": "203.0.113.10", "AUDIT_EGRESS_IP": "203.0.113.11"}, "AUDIT_EGRESS_IP"),
        ({"EGRESS_IPS": "203.0.113.10,203.0.113.11,203.0.113.12", "AUDIT_QUEUE_URL_BITGET": "q1,q2"}, "BITGET"),
        ({"AUDIT_TICK_MINUTES": "7"}, "AUDIT_TICK_MINUTES"),
        ({"CREDENTIAL_STORE": "kms", "CREDENTIALS_KMS_KEY_ID": "k", "STACK_NAME": "s"}, "CREDENTIALS_TABLE_NAME"),
        ({"CREDENTIAL_STORE": "kms", "CREDENTIALS_TABLE_NAME": "t", "STACK_NAME": "s"}, "CREDENTIALS_KMS_KEY_ID"),
        ({"CREDENTIAL_STORE": "kms", "CREDENTIALS_TABLE_NAME": "t", "CREDENTIALS_KMS_KEY_ID": "k"}, "STACK_NAME"),
    ],
)
def test_wrong_values_name_the_variable(env, named):
    with pytest.raises(ConfigError, match=named):
        Settings.from_env(env)


def test_planned_egress_ips_and_the_rolling_audit_are_parsed():
    settings = Settings.from_env(
        {
            "PLANNED_EGRESS_IPS": " 203.0.113.20@2027-01-15 , 2001:db8::20@2027-02-01",
            "AUDIT_MODE": "Rolling",
            "AUDIT_TICK_MINUTES": "10",
            "AUDIT_SUMMARY_HOUR": "7",
            "AUDIT_INCIDENT_WINDOW_MINUTES": "45",
        }
    )
    assert [(p.ip, p.effective_at.isoformat()) for p in settings.planned_egress_ips] == [
        ("203.0.113.20", "2027-01-15"),
        ("2001:db8::20", "2027-02-01"),
    ]
    assert (settings.audit_mode, settings.audit_tick_minutes, settings.audit_summary_hour) == ("rolling", 10, 7)
    assert settings.audit_incident_window_minutes == 45
    defaults = Settings.from_env({})
    assert (defaults.planned_egress_ips, defaults.audit_mode, defaults.audit_tick_minutes) == ((), "nightly", 5)


def test_the_credential_store_is_secrets_manager_unless_kms_is_chosen():
    assert Settings.from_env({}).credential_store == "secretsmanager"
    kms = Settings.from_env(
        {
            "CREDENTIAL_STORE": " KMS ",
            "CREDENTIALS_TABLE_NAME": "keyhealth-credentials",
            "CREDENTIALS_KMS_KEY_ID": "arn:aws:kms:eu-west-1:123456789012:key/1",
            "STACK_NAME": "keyhealth",
        }
    )
    assert (kms.credential_store, kms.credentials_table_name, kms.stack_name) == (
        "kms",
        "keyhealth-credentials",
        "keyhealth",
    )


def test_with_a_queue_per_egress_ip_the_dispatcher_spreads_over_them_and_a_worker_reports_its_own_ip_first():
    ips = "203.0.113.10,203.0.113.11"
    queues = {
        f"AUDIT_QUEUE_URL_{name}": f"https://sqs/{name}-a,https://sqs/{name}-b"
        for name in ("BINANCE", "BITGET", "BINGX")
    }
    worker = Settings.from_env({"EGRESS_IPS": ips, "AUDIT_EGRESS_IP": "203.0.113.11", **queues})
    assert worker.audit_spread_ips == ("203.0.113.10", "203.0.113.11")
    assert worker.queue_urls_for("bitget") == ("https://sqs/BITGET-a", "https://sqs/BITGET-b")
    assert worker.egress_ips_from_here == ("203.0.113.11", "203.0.113.10")
    # one queue per exchange for both IPs (a worker whose calls leave from either NAT): tasks name no IP
    shared = Settings.from_env({"EGRESS_IPS": ips, "AUDIT_QUEUE_URL_BITGET": "https://sqs/bitget"})
    assert shared.audit_spread_ips == ()
    assert shared.egress_ips_from_here == ("203.0.113.10", "203.0.113.11")
