"""The RabbitMQ transport (``amqp://``, ``amqps://``): broker, control state (revocation
stream, global rate limits) and the ``rpc://`` result backend."""
