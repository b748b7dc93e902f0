"""The official MCP Python SDK (PyPI `mcp`) against aistack, with the real model, over both
transports: streamable HTTP at URL with the API key KEY, and stdio through the command after
`--`. It adds documents, searches them (vector and hybrid), deletes one and sees it gone, reads
the collections as resources, and checks that bad inputs are tool errors with the server's
codes and that `/mcp` without a key is 401. Prints a JSON summary.
Usage: mcp_client.py URL KEY -- AISTACK_BINARY mcp --model DIR --data-dir DIR"""
import asyncio
import json
import sys
import urllib.error
import urllib.request

import httpx2
from mcp import Client, ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

url, key = sys.argv[1], sys.argv[2]
command = sys.argv[sys.argv.index("--") + 1:]

DOCS = [
    {"id": "wal", "text": "The write-ahead log records every change before it is applied, so a "
     "crash never loses an acknowledged write.", "metadata": {"topic": "storage"}},
    {"id": "errno", "text": "open() fails with ENOENT when the file does not exist and with EACCES "
     "when permission is denied.", "metadata": {"topic": "errors"}},
    {"id": "rrf", "text": "Reciprocal rank fusion adds one over sixty plus the rank from each list "
     "a result appears in.", "metadata": {"topic": "search"}},
]


def ok(result):
    assert result.is_error is False, result.content
    assert result.content and result.content[0].type == "text" and result.content[0].text
    return result.structured_content


def tool_error(result):
    assert result.is_error is True, result
    code = result.structured_content["error"]["code"]
    assert result.content[0].text.startswith(f"error {code}: "), result.content[0].text
    assert len(result.structured_content["error"]["error_id"]) == 32
    return code


async def exercise(session, collection, version):
    init = await session.initialize()
    assert init.protocol_version == version, init.protocol_version
    assert init.server_info.name == "aistack"
    # The model loads in the background: until it is ready, embedding is a tool error
    # `unavailable` (with a retry hint), never a protocol failure.
    for _ in range(600):
        r = await session.call_tool("embed", {"texts": ["warm up"]})
        if not r.is_error:
            break
        assert tool_error(r) == "unavailable", r
        await asyncio.sleep(0.1)
    names = sorted(t.name for t in (await session.list_tools()).tools)
    assert names == sorted(["search", "add_documents", "delete_document", "list_collections",
                            "describe_collection", "embed"]), names

    added = ok(await session.call_tool("add_documents",
                                       {"collection": collection, "documents": DOCS}))
    assert added["documents"] == 3 and added["chunks"] >= 3, added
    # Idempotent by id: the same documents again replace themselves (no duplicates).
    again = ok(await session.call_tool("add_documents",
                                       {"collection": collection, "documents": DOCS}))
    assert again["chunks"] == added["chunks"], again
    described = ok(await session.call_tool("describe_collection", {"collection": collection}))
    assert described["count"] == added["chunks"] and described["dims"] == 384, described
    assert described["metric"] == "cosine"

    hits = ok(await session.call_tool("search", {"collection": collection, "k": 3,
                                                 "query": "what survives a crash?"}))["hits"]
    assert hits[0]["document_id"] == "wal", hits
    hybrid = ok(await session.call_tool("search", {"collection": collection, "k": 3,
                                                   "query": "ENOENT", "mode": "hybrid"}))["hits"]
    assert hybrid[0]["document_id"] == "errno" and hybrid[0]["lexical_rank"] == 1, hybrid
    filtered = ok(await session.call_tool("search", {
        "collection": collection, "k": 3, "query": "crash",
        "filter": {"topic": {"$eq": "search"}}}))["hits"]
    assert [h["document_id"] for h in filtered] == ["rrf"], filtered

    deleted = ok(await session.call_tool("delete_document", {"collection": collection, "id": "wal"}))
    assert deleted["deleted"] is True and deleted["records"] >= 1, deleted
    after = ok(await session.call_tool("search", {"collection": collection, "k": 10,
                                                  "query": "what survives a crash?"}))["hits"]
    assert "wal" not in [h["document_id"] for h in after], after

    vectors = ok(await session.call_tool("embed", {"texts": ["hello", "world"]}))
    assert vectors["dimensions"] == 384 and len(vectors["embeddings"]) == 2

    listed = ok(await session.call_tool("list_collections", {}))
    assert collection in [c["name"] for c in listed["collections"]], listed
    resources = (await session.list_resources()).resources
    uri = f"aistack://collections/{collection}"
    assert uri in [r.uri for r in resources], resources
    content = (await session.read_resource(uri)).contents[0]
    assert json.loads(content.text)["count"] == described["count"] - deleted["records"], content

    codes = {
        "unknown collection": tool_error(await session.call_tool(
            "describe_collection", {"collection": "no-such-collection"})),
        "unknown argument": tool_error(await session.call_tool(
            "search", {"collection": collection, "query": "x", "kk": 3})),
        "k = 0": tool_error(await session.call_tool(
            "search", {"collection": collection, "query": "x", "k": 0})),
        "empty query": tool_error(await session.call_tool(
            "search", {"collection": collection, "query": "   "})),
        "no documents": tool_error(await session.call_tool(
            "add_documents", {"collection": collection, "documents": []})),
        "bad name": tool_error(await session.call_tool(
            "describe_collection", {"collection": "../etc"})),
        "missing document": tool_error(await session.call_tool(
            "delete_document", {"collection": collection, "id": "never-added"})),
        "wrong dimensions": tool_error(await session.call_tool(
            "search", {"collection": collection, "vector": [0.1, 0.2]})),
    }
    assert codes == {
        "unknown collection": "not_found", "unknown argument": "invalid_input",
        "k = 0": "invalid_input", "empty query": "invalid_input", "no documents": "invalid_input",
        "bad name": "invalid_input", "missing document": "not_found",
        "wrong dimensions": "invalid_input",
    }, codes
    return {"hits": len(hits), "errors": len(codes)}


async def over_http():
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(60, read=300)) as http:
        async with streamable_http_client(url, http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                return await exercise(session, "mcp-http", "2025-11-25")


async def latest_revision_over_http():
    """The SDK's high-level client negotiates the newest revision (2026-07-28, no handshake)."""
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(60, read=300)) as http:
        async with Client(streamable_http_client(url, http_client=http)) as c:
            found = (await c.call_tool("search", {"collection": "mcp-http", "k": 2,
                                                  "query": "permission denied"}))
            assert found.is_error is False, found
            return c.protocol_version, found.structured_content["hits"][0]["document_id"]


async def over_stdio():
    params = StdioServerParameters(command=command[0], args=command[1:],
                                   env={"AISTACK__LOG__LEVEL": "info"})
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            return await exercise(session, "mcp-stdio", "2025-11-25")


def without_key():
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).encode()
    req = urllib.request.Request(url, method="POST", data=body, headers={
        "Content-Type": "application/json", "Accept": "application/json, text/event-stream"})
    try:
        urllib.request.urlopen(req, timeout=10)
    except urllib.error.HTTPError as e:
        assert e.code == 401, e.code
        assert json.loads(e.read())["error"]["code"] == "unauthorized"
        return 401
    raise AssertionError("/mcp without a key must be 401")


summary = {
    "http": asyncio.run(over_http()),
    "latest": asyncio.run(latest_revision_over_http()),
    "stdio": asyncio.run(over_stdio()),
    "no_key": without_key(),
}
assert summary["latest"] == ("2026-07-28", "errno"), summary["latest"]
print(json.dumps(summary))
