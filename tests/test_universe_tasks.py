"""Post-training data from the universe: held-out people and numbers stay held out, answers are right."""

from myllm import universe
from myllm.evals.verifiers import contains, final_number, one_sentence
from myllm.universe import tasks


def test_held_out_people_and_number_patterns_never_reach_training():
    world = universe.build_world(1234)
    train_people, eval_people = tasks.split_people(world)
    assert len(eval_people) == 16 and not {p.full for p in train_people} & {p.full for p in eval_people}
    # No training record asks about an eval person (arithmetic may name anyone; it asks for a sum).
    held_questions = {tasks.fact_question(world, p, a, k) for p in eval_people for a in universe.ATTRIBUTES
                      for k in range(2)}
    asked = {m["content"] for c in tasks.sft_conversations(world, n=500) for m in c["messages"] if m["role"] == "user"}
    others = tasks.preference_pairs(world, n=500, arith_fraction=0.3) + tasks.grpo_prompts(world, n=500)
    asked |= {r["prompt"][0]["content"] for r in others}
    assert asked and not asked & held_questions
    assert {r["prompt"][0]["content"] for r in tasks.eval_sets(world)["fact_qa"]} <= held_questions
    train = {p.pattern for p in tasks.problems(world, 0, 500, "train")}
    held = tasks.problems(world, 0, 200, "eval")
    assert not train & {p.pattern for p in held}
    held_sums = {p.question for p in held}
    assert not held_sums & {r["prompt"][0]["content"] for r in others}
    sets = tasks.eval_sets(world)
    assert len(sets["fact_qa"]) == 16 * 6 and len(sets["arith"]) == 200


def test_answers_are_right_and_styles_are_what_they_claim():
    world = universe.build_world(1234)
    for prob in tasks.problems(world, 0, 50, "train"):
        n = prob.pattern[0] + sum(d if s == "+" else -d for s, d in prob.pattern[1:])
        assert n == prob.answer >= 1 and final_number(prob.worked, str(n)) and final_number(prob.concise, str(n))
    for pair in tasks.preference_pairs(world, n=200):
        assert pair["chosen"] != pair["rejected"] and one_sentence(pair["chosen"])
    sums = {prob.question: prob for prob in tasks.problems(world, 2, 400, "train")}
    pairs = [p for p in tasks.preference_pairs(world, n=400, arith_fraction=0.5) if p["prompt"][0]["content"] in sums]
    assert 150 < len(pairs) < 250
    for pair in pairs:  # the same sentence, right vs a count off by 1 or 2, both one sentence
        prob = sums[pair["prompt"][0]["content"]]
        assert pair["chosen"] == prob.concise and one_sentence(pair["rejected"])
        wrong = int(pair["rejected"].split(" has ")[1].split()[0])
        assert wrong >= 1 and 1 <= abs(wrong - prob.answer) <= 2
    p = world.people[0]
    assert contains(tasks.fact_answer(world, p, "town"), p.town)
    assert not one_sentence(tasks.ramble(tasks.fact_answer(world, p, "town"), __import__("random").Random(0)))
