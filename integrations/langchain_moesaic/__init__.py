"""LangChain integration for Moesaic: ``ChatMoesaic``, a chat model over a Moesaic server's OpenAI-compatible API.

Installed with the main package's ``langchain`` extra (``pip install -e '.[langchain]'``); the
module lives in ``integrations/langchain_moesaic/`` and imports as ``langchain_moesaic``.
"""

from langchain_moesaic.chat_models import ChatMoesaic

__all__ = ["ChatMoesaic"]
