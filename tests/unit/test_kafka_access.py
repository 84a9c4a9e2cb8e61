"""Kafka's ACLs come from the event catalogue: each principal gets exactly the rights its place in
the catalogue gives it, and the native stack turns them into the broker's ACLs, passwords and
SCRAM users."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from kafka.admin import ACLOperation, ACLResourcePatternType, ResourceType
from screwops_contracts import (
    CATALOGUE,
    FEEDS,
    OPERATOR,
    UPSTREAM,
    UPSTREAM_TOPICS,
    Topic,
    access_rights,
    all_topics,
    dlq_topic,
)
from screwops_settings import (
    ServiceSettings,
    StackSettings,
    kafka_client_options,
    kafka_password_file,
)
from screwops_stack import kafka_security
from screwops_stack.servers import Layout, kafka_properties
from screwops_stack.supervisor import (
    KAFKA_PASSWORD,
    KAFKA_USERNAME,
    MINIO_ACCESS_KEY,
    principal_env,
)

FLOWS = [(str(r.event.TOPIC), r.producer, r.consumers) for r in CATALOGUE] + [
    (f.topic, f.producer, f.consumers) for f in FEEDS
]
SERVICES = sorted({name for _, producer, consumers in FLOWS for name in (producer, *consumers)})


def test_every_producer_writes_its_topics_and_every_consumer_reads_them_in_its_group() -> None:
    rights = access_rights()
    for topic, producer, consumers in FLOWS:
        assert topic in rights[producer].write, (producer, topic)
        for consumer in consumers:
            assert topic in rights[consumer].read, (consumer, topic)
            assert dlq_topic(topic) in rights[consumer].write, (consumer, topic)
            assert rights[consumer].groups == {consumer}
            assert rights[consumer].group_prefixes == {f"{consumer}-"}


@pytest.mark.parametrize("name", SERVICES)
def test_a_service_gets_nothing_beyond_its_catalogue_entries(name: str) -> None:
    produced = {topic for topic, producer, _ in FLOWS if producer == name}
    consumed = {topic for topic, _, consumers in FLOWS if name in consumers}
    rights = access_rights()[name]
    assert rights.write == produced | {dlq_topic(topic) for topic in consumed}
    assert rights.read == consumed


def test_only_the_registry_and_the_operator_may_move_the_production_alias() -> None:
    for topic in (Topic.MODEL_ROLLED_BACK, Topic.MODEL_DEPLOYED):
        writers = {r.principal for r in access_rights().values() if topic in r.write}
        assert writers == {"registry", OPERATOR}, topic


def test_the_operator_reads_everything_and_writes_back_only_original_topics() -> None:
    operator = access_rights()[OPERATOR]
    assert operator.read == set(all_topics())
    assert operator.write == {topic for topic, _, _ in FLOWS}
    assert not operator.groups


def test_upstream_may_only_ask_for_training() -> None:
    upstream = access_rights()[UPSTREAM]
    assert upstream.write == set(UPSTREAM_TOPICS) == {Topic.TRAINING_REQUESTED}
    assert not upstream.read
    assert not upstream.groups


def test_acls_are_one_literal_allow_per_right() -> None:
    rights = access_rights()
    acls = kafka_security.acls(rights.values())
    expected = sum(
        len(r.write) + len(r.read) + len(r.groups) + len(r.group_prefixes) for r in rights.values()
    )
    assert len(acls) == expected
    writes = {
        acl.resource_pattern.resource_name
        for acl in acls
        if acl.principal == "User:gateway" and acl.operation == ACLOperation.WRITE
    }
    assert writes == rights["gateway"].write
    groups = {
        (acl.principal, acl.resource_pattern.resource_name, acl.resource_pattern.pattern_type)
        for acl in acls
        if acl.resource_pattern.resource_type == ResourceType.GROUP
    }
    members = [name for name in SERVICES if rights[name].groups]
    assert groups == {
        (f"User:{name}", name, ACLResourcePatternType.LITERAL) for name in members
    } | {(f"User:{name}", f"{name}-", ACLResourcePatternType.PREFIXED) for name in members}


def test_every_principal_gets_an_owner_only_password_once(tmp_path: Path) -> None:
    first = kafka_security.ensure_passwords(tmp_path)
    assert set(first) == {kafka_security.ADMIN, *access_rights()}
    assert kafka_security.ensure_passwords(tmp_path) == first
    for name in first:
        mode = kafka_password_file(tmp_path, name).stat().st_mode
        assert stat.S_IMODE(mode) == 0o600, name
    assert len(set(first.values())) == len(first)


def test_storage_format_adds_a_scram_user_per_principal() -> None:
    arguments = kafka_security.scram_arguments({"registry": "s3cret", "admin": "t0ken"})
    assert arguments == [
        "--add-scram",
        "SCRAM-SHA-512=[name=admin,password=t0ken]",
        "--add-scram",
        "SCRAM-SHA-512=[name=registry,password=s3cret]",
    ]


def test_a_data_directory_formatted_before_sasl_says_what_to_run(tmp_path: Path) -> None:
    (tmp_path / "meta.properties").write_text("version=1\n")
    with pytest.raises(kafka_security.StaleStackError, match="make clean-stack"):
        kafka_security.check_formatted_with_users(tmp_path)
    (tmp_path / kafka_security.SCRAM_MARKER).touch()
    kafka_security.check_formatted_with_users(tmp_path)


def test_the_broker_takes_only_scram_over_tls_and_denies_what_no_acl_allows(
    tmp_path: Path,
) -> None:
    settings = StackSettings(home=tmp_path)
    properties = kafka_properties(settings, Layout(tmp_path), admin_password="pw")
    values = dict(
        line.split("=", 1) for line in properties.replace("\\\n", "").splitlines() if "=" in line
    )
    assert values["listener.security.protocol.map"] == "CONTROLLER:PLAINTEXT,CLIENTS:SASL_SSL"
    assert values["listeners"].startswith("CLIENTS://127.0.0.1:")
    assert values["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert values["allow.everyone.if.no.acl.found"] == "false"
    assert values["authorizer.class.name"].endswith("StandardAuthorizer")


def test_clients_log_in_with_the_password_the_stack_generated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(KAFKA_USERNAME, raising=False)
    monkeypatch.delenv(KAFKA_PASSWORD, raising=False)
    passwords = kafka_security.ensure_passwords(tmp_path)
    options = kafka_client_options(StackSettings(home=tmp_path).kafka)
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_username"] == OPERATOR
    assert options["sasl_plain_password"] == passwords[OPERATOR]


def test_a_supervised_service_logs_in_as_itself() -> None:
    env = principal_env({KAFKA_USERNAME: "admin", KAFKA_PASSWORD: "x", "PATH": "/bin"}, "gateway")
    assert env == {KAFKA_USERNAME: "gateway", MINIO_ACCESS_KEY: "gateway", "PATH": "/bin"}


def test_a_service_started_by_hand_logs_in_as_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(KAFKA_USERNAME, raising=False)
    monkeypatch.delenv(KAFKA_PASSWORD, raising=False)
    monkeypatch.setenv("SCREWOPS_HOME", str(tmp_path))
    passwords = kafka_security.ensure_passwords(tmp_path)

    class Gateway(ServiceSettings):
        service_name: str = "gateway"
        metrics_port: int = 9107

    kafka = Gateway().stack.kafka
    assert kafka.username == "gateway"
    assert kafka.password is not None
    assert kafka.password.get_secret_value() == passwords["gateway"]
    monkeypatch.setenv(KAFKA_USERNAME, "admin")
    assert Gateway().stack.kafka.username == "admin"
