"""LangChain integration for Moesaic: ``ChatMoesaic``, a chat model over a Moesaic server's OpenAI-compatible API.

Its own distribution, ``langchain-moesaic`` (``pip install ./integrations/langchain_moesaic``): it depends on
``langchain-openai`` and nothing of the server (no Ray, LiteLLM or torch in an agent's environment).
"""

from langchain_moesaic.chat_models import ChatMoesaic

__all__ = ["ChatMoesaic"]
