"""What a mailbox's health says when its fetch stopped on an error other than the mail server's:
the cause in plain words, from the real error of a server that is not there."""

import pytest
from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from portal.inbound.health import stopped_in_words
from tests.dovecot import unused_port


def test_redis_away_is_named_as_the_job_queue_and_fetching_resumes_by_itself():
    with pytest.raises(RedisConnectionError) as away:
        Redis(host="127.0.0.1", port=unused_port(), socket_connect_timeout=2).ping()
    words = stopped_in_words(away.value)
    assert words.startswith("Redis, the job queue, could not be reached: ")
    assert "Connection refused" in words and words.endswith("Fetching resumes by itself at the next poll.")
    assert ".." not in words  # redis-py ends its message with a full stop of its own


def test_the_database_away_is_said_without_its_password():
    engine = create_engine(f"postgresql+psycopg://tidemark:s3cret@127.0.0.1:{unused_port()}/tidemark",
                           connect_args={"connect_timeout": 2})
    with pytest.raises(OperationalError) as away, engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    words = stopped_in_words(away.value)
    assert words.startswith("The database could not be reached: ") and "s3cret" not in words


def test_anything_else_is_an_unexpected_error_with_its_kind():
    assert stopped_in_words(ValueError("bad value")) == ("The fetch stopped on an unexpected error (ValueError: "
                                                          "bad value). It is tried again at the next poll.")
