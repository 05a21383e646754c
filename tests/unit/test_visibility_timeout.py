"""Issue 14: a visibility timeout too short for a redelivery to tell a live owner is refused."""

from __future__ import annotations

import pytest

from bucketvision.infra.settings import Settings, SettingsError


@pytest.mark.parametrize("timeout", ["1", "10", "19"])
def test_a_visibility_timeout_shorter_than_two_owner_leases_is_refused(timeout: str) -> None:
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({"BV_VISIBILITY_TIMEOUT": timeout})
    message = str(refused.value)
    assert f"BV_VISIBILITY_TIMEOUT={timeout}" in message
    assert "set BV_VISIBILITY_TIMEOUT to at least 20" in message


def test_twenty_seconds_is_enough_with_the_lost_batch_audit_on() -> None:
    assert Settings.from_env({"BV_VISIBILITY_TIMEOUT": "20"}).visibility_timeout == 20


def test_without_the_audit_the_timeout_must_outlast_an_outage_ride_out() -> None:
    env = {"BV_VISIBILITY_TIMEOUT": "300", "BV_OUTAGE_SECONDS": "600", "BV_LOST_BATCH_SECONDS": "0"}
    with pytest.raises(SettingsError) as refused:
        Settings.from_env(env)
    message = str(refused.value)
    assert "BV_VISIBILITY_TIMEOUT=300" in message and "BV_OUTAGE_SECONDS=600" in message
    assert "set BV_VISIBILITY_TIMEOUT to at least 660" in message
    assert Settings.from_env({**env, "BV_VISIBILITY_TIMEOUT": "660"}).visibility_timeout == 660
    assert Settings.from_env({**env, "BV_LOST_BATCH_SECONDS": "30"}).visibility_timeout == 300
