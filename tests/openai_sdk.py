"""The official `openai` Python SDK against a running `strata serve`,
unchanged: chat (plain and streaming), completions, the model list and
card, and one error case per status, each raising the SDK's own exception
class. Then /metrics, parsed by prometheus_client's text-format parser,
must have moved by exactly what was served: the gateway counts every
request it answered, the local worker those forwarded to it.

Usage: python openai_sdk.py BASE_URL MODEL API_KEY (tests/openai_sdk.rs runs it)
"""

import sys
import urllib.request

import openai
from prometheus_client.parser import text_string_to_metric_families

base, model, key = sys.argv[1], sys.argv[2], sys.argv[3]
client = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=60)


def scrape():
    req = urllib.request.Request(f"{base}/metrics", headers={"Authorization": f"Bearer {key}"})
    text = urllib.request.urlopen(req, timeout=30).read().decode()
    values = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            values[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return values


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


before = scrape()

models = client.models.list()
assert [m.id for m in models.data] == [model], models
assert client.models.retrieve(model).id == model

chat = client.chat.completions.create(
    model=model,
    messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello!"}],
    max_tokens=8,
    temperature=0,
)
assert chat.object == "chat.completion", chat
assert chat.choices[0].message.role == "assistant"
assert isinstance(chat.choices[0].message.content, str)
assert chat.choices[0].finish_reason in ("stop", "length")
assert chat.usage.total_tokens == chat.usage.prompt_tokens + chat.usage.completion_tokens
served_prompt = chat.usage.prompt_tokens
served_completion = chat.usage.completion_tokens

stream = client.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": "Count to ten."}],
    max_tokens=10,
    temperature=0.8,
    seed=7,
    stream=True,
    stream_options={"include_usage": True},
)
pieces, finishes, usage = [], [], None
for chunk in stream:
    if chunk.usage is not None:
        usage = chunk.usage
    for c in chunk.choices:
        if c.delta.content:
            pieces.append(c.delta.content)
        if c.finish_reason:
            finishes.append(c.finish_reason)
assert finishes and finishes[-1] in ("stop", "length"), finishes
assert usage is not None and usage.completion_tokens >= 1, usage
served_prompt += usage.prompt_tokens
served_completion += usage.completion_tokens

completion = client.completions.create(model=model, prompt="Once upon a time", max_tokens=6, temperature=0)
assert completion.object == "text_completion", completion
assert isinstance(completion.choices[0].text, str)
served_prompt += completion.usage.prompt_tokens
served_completion += completion.usage.completion_tokens

def raises(cls, call):
    try:
        call()
    except cls as e:
        return e
    raise AssertionError(f"expected {cls.__name__}")

e = raises(openai.NotFoundError, lambda: client.chat.completions.create(
    model="no-such-model", messages=[{"role": "user", "content": "hi"}]))
assert "no-such-model" in str(e), e
assert e.body["code"] == "model_not_found", e.body
raises(openai.NotFoundError, lambda: client.models.retrieve("no-such-model"))
e = raises(openai.BadRequestError, lambda: client.chat.completions.create(
    model=model, messages=[{"role": "user", "content": "hi"}], temperature=3))
assert e.body["param"] == "temperature", e.body
e = raises(openai.BadRequestError, lambda: client.completions.create(model=model, prompt="hi", max_tokens=0))
assert e.body["param"] == "max_tokens", e.body
wrong_key = openai.OpenAI(base_url=f"{base}/v1", api_key="wrong", max_retries=0)
raises(openai.AuthenticationError, lambda: wrong_key.models.list())

after = scrape()
def delta(name, **labels):
    return value(after, name, **labels) - value(before, name, **labels)

# The gateway answered everything; the 404s and 401 it answered itself.
gateway = "strata_gateway_requests_total"
assert delta(gateway, route="/v1/chat/completions", status="200") == 2
assert delta(gateway, route="/v1/completions", status="200") == 1
assert delta(gateway, route="/v1/chat/completions", status="404") == 1
assert delta(gateway, route="/v1/chat/completions", status="400") == 1
assert delta(gateway, route="/v1/completions", status="400") == 1
assert delta(gateway, route="/v1/models", status="200") == 1
assert delta(gateway, route="/v1/models", status="401") == 1
assert delta(gateway, route="/v1/models/{id}", status="200") == 1
assert delta(gateway, route="/v1/models/{id}", status="404") == 1
assert delta("strata_gateway_forward_attempts_total", outcome="ok") == 5
assert value(after, "strata_gateway_active_nodes") == 1
# The worker saw what was forwarded: three served, two it refused.
assert delta("strata_requests_total", route="/v1/chat/completions", status="200") == 2
assert delta("strata_requests_total", route="/v1/completions", status="200") == 1
assert delta("strata_requests_total", route="/v1/chat/completions", status="400") == 1
assert delta("strata_requests_total", route="/v1/completions", status="400") == 1
assert delta("strata_requests_total", route="/v1/chat/completions", status="404") == 0
assert delta("strata_prompt_tokens_total") == served_prompt, (delta("strata_prompt_tokens_total"), served_prompt)
assert delta("strata_completion_tokens_total") == served_completion
assert delta("strata_time_to_first_token_seconds_count") == 3
assert value(after, "strata_requests_in_flight") == 0
print(f"openai {openai.__version__}: models, chat, chat stream, completions, model card, 404/400/401 and gateway and worker metrics all as expected")
