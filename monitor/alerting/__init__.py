"""The parts of alerting the pipeline (`monitor.alerts`) is made of: the messages
(`messages`, pure composition from outbox rows) and the channels that send them
(`notifiers`, email and webhook behind one `Notifier` protocol)."""
