"""The dispatcher: delivers the actions on ``safar.actions`` (DESIGN §7, §8).

``runner.Dispatcher`` consumes actions in its own consumer group and gives each one attempt
as it arrives; failed attempts wait in a Redis retry schedule (``retry_schedule``) so that a
slow receiver never holds up the partition. Finished outcomes are remembered per action id
(``delivery_log``) before offsets are committed, so a redelivered action is not sent again.
Channels: ``webhook`` (Standard Webhooks signatures), ``email`` (SMTP), ``kafka_channel``,
``log_channel``; templates render at send time in a Jinja2 sandbox (``shared.templates``).
"""

from services.orchestrator.dispatcher.runner import Dispatcher

__all__ = ["Dispatcher"]
