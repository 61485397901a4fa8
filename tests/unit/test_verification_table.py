"""kn.verification's control choice and effects table, on Verifications built here."""
import numpy as np
import pytest

from kn.verification import Effect, Verification, effects_table, first_control


def test_first_control_is_the_first_fact_of_another_relation_else_the_next():
    assert first_control(["capital", "capital", "language"], 0) == 2
    assert first_control(["capital", "capital", "language"], 2) == 0
    assert first_control(["capital", "capital", "capital"], 1) == 2
    assert first_control(["capital", "capital", "capital"], 2) == 0


def test_effects_table_a_row_per_fact_target_and_condition():
    fact = Effect(np.array([0.4, 0.2]), np.array([0.1, 0.05]), np.array([0.8, 0.4]))
    control = Effect(np.array([0.5]), np.array([0.5]), np.array([0.25]))
    t = effects_table([(" Paris", Verification(fact, control), " Berlin")])
    assert t["measured on"].tolist() == ["fact", "fact", "control:  Berlin", "control:  Berlin"]
    assert t.target.tolist() == ["fact", "fact", "control", "control"]
    assert t.condition.tolist() == ["suppress", "amplify"] * 2
    assert t["mean P before"].tolist() == pytest.approx([0.3, 0.3, 0.5, 0.5])
    assert t["mean P after"].tolist() == pytest.approx([0.075, 0.6, 0.5, 0.25])
    assert t["relative change"].tolist() == pytest.approx([-0.75, 1.0, 0.0, -0.5])
    assert (t.answer == " Paris").all()
