"""Adapters to other libraries, each behind its optional extra:
``aistack.integrations.langchain`` (``pip install aistack[langchain]``),
``aistack.integrations.llamaindex`` (``aistack[llamaindex]``) and
``aistack.integrations.chroma`` (``aistack[chroma]``)."""
