"""A short training schedule is said as such: in the card's training record and in the model's description."""
from qpart.server.training import train, zoo


def test_a_short_schedule_is_recorded_in_the_card(data_dir, tmp_path):
    schedule = zoo.Schedule("demo", train_limit=5000, epochs=2, batch_size=64, learning_rate=2e-3,
                            validation_size=2000)
    card = train.train("fc6", tmp_path, data_dir, train.TrainConfig.of(schedule, progress=False)).card
    training = card["training"]
    assert training["schedule"] == "demo" and training["epochs"] == 2
    assert training["train_samples"] == 5000 and training["available_samples"] == 58000
    assert card["validation"]["size"] == 2000
    assert "trained on the demo schedule (5,000 of 58,000 training images, 2 epoch(s))" in card["description"]
    assert card["float_test_accuracy"] > 50.0          # measured on the 10,000 test images, as for any model


def test_the_zoo_schedule_says_nothing_of_the_kind(repo):
    card = repo.get("fc6").card
    assert not card["training"].get("schedule") and "schedule" not in card["description"]


def test_demo_schedules_are_shorter_than_the_zoo():
    for name, schedule in zoo.DEMO_SCHEDULES.items():
        entry = zoo.ZOO[name]
        full = (entry.train_limit or 60000 - 10000) * entry.epochs
        assert schedule.train_limit * schedule.epochs < full / 4, name
