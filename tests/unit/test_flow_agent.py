"""The flow agent (the demo agent's default brain) on the shipped demo script.

Conversations run through `FlowAgent.stream` exactly as the call actor drives an LLM: the
whole message history in, text pieces and tool calls out. Utterances are written the way a
speech-to-text engine gets them wrong (misspellings, split words, homophones), since that is
what the agent hears on a real call.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from switchboard.protocols.flow import FlowScript, Slot
from switchboard.protocols.llm import (
    ChatMessage,
    LlmFinish,
    LlmText,
    LlmToolCall,
    ToolCall,
    ToolSpec,
)
from switchboard.providers import LanguageModel, ProviderRejected
from switchboard.providers.llm.flow import FlowAgent
from switchboard.providers.llm.flow_engine import FlowEngine, FlowState, extract
from switchboard.providers.llm.flow_file import FlowFileError, load_flow, parse_flow
from switchboard.providers.llm.flow_match import normalize
from switchboard.providers.llm.flow_slots import extract_yes_no

pytestmark = pytest.mark.unit

DEMO = Path(__file__).resolve().parents[2] / "configs" / "flows" / "demo.yaml"
WEDNESDAY = dt.date(2026, 11, 25)
TOOLS = [ToolSpec(name="transfer", description="Transfer the call."),
         ToolSpec(name="hang_up", description="End the call."),
         ToolSpec(name="record_booking", description="Record a booking.")]
FRONT_DESK = '{"target":"sip:frontdesk@olive-tree.example"}'


class Call:
    """A conversation with a flow agent, kept as the call actor keeps it."""

    def __init__(self, agent: FlowAgent, tools: list[ToolSpec] = TOOLS) -> None:
        self.agent = agent
        self.tools = tools
        self.messages: list[ChatMessage] = [ChatMessage(role="system", content="ignored")]
        self.calls: list[ToolCall] = []
        self.finish: LlmFinish | None = None

    async def turn(self, message: ChatMessage | None = None) -> str:
        if message is not None:
            self.messages.append(message)
        events = [e async for e in self.agent.stream(self.messages, self.tools)]
        assert isinstance(events[-1], LlmFinish)
        self.finish = events[-1]
        pieces = [e.text for e in events if isinstance(e, LlmText)]
        self.calls = [e.call for e in events if isinstance(e, LlmToolCall)]
        # Text first, then calls, then the finish: the order the call actor relies on.
        kinds = [type(e).__name__ for e in events]
        assert kinds == sorted(kinds, key=["LlmText", "LlmToolCall", "LlmFinish"].index)
        text = "".join(pieces)
        self.messages.append(ChatMessage(role="assistant", content=text,
                                         tool_calls=tuple(self.calls)))
        return text

    async def say(self, text: str) -> str:
        return await self.turn(ChatMessage(role="user", content=text))

    async def result(self, content: str) -> str:
        call = self.calls[-1]
        return await self.turn(ChatMessage(role="tool", tool_call_id=call.id, content=content))


@pytest.fixture(scope="module")
def script() -> FlowScript:
    return load_flow(DEMO)


@pytest.fixture
def agent(script: FlowScript) -> FlowAgent:
    return FlowAgent(script, today=lambda: WEDNESDAY)


@pytest.fixture
async def call(agent: FlowAgent) -> Call:
    call = Call(agent)
    await call.turn()  # the greeting
    return call


async def test_it_is_a_language_model_that_greets_first(agent: FlowAgent) -> None:
    assert isinstance(agent, LanguageModel)
    call = Call(agent)
    greeting = await call.turn()
    assert greeting.startswith("Hello, thanks for calling The Olive Tree.")
    assert call.finish is not None and call.finish.reason == "stop" and not call.calls
    assert await call.turn() == ""  # nothing new to answer: no repeat


@pytest.mark.parametrize(("heard", "answer_starts"), [
    ("what time do you close", "We're open every day"),
    ("uh what time do you clothes on sunday", "We're open every day"),  # STT: close -> clothes
    ("are you opened today", "We're open every day"),
    ("wear are you", "We're at 12 Harbour Street"),                    # STT: where -> wear
    ("is there parking", "We're at 12 Harbour Street"),
    ("do you have vegan stuff", "We serve Mediterranean food"),
    ("what's on the manu", "We serve Mediterranean food"),             # STT: menu -> manu
])
async def test_questions_are_answered_despite_stt_slips(call: Call, heard: str,
                                                        answer_starts: str) -> None:
    reply = await call.say(heard)
    assert reply.startswith(answer_starts)
    assert reply.endswith("Is there anything else I can help you with?")
    assert not call.calls


async def test_a_booking_fills_slots_from_the_first_sentence_then_confirms(call: Call) -> None:
    reply = await call.say("hi I'd like to book a tabel for four tomorrow at half past seven")
    assert reply == ("I'd be happy to book a table for you. "
                     "And what name should I put the booking under?")
    reply = await call.say("my name is Anna Lopez")
    assert reply == ("So that's a table for 4 on Thursday, November 26 at 7:30 PM, under the "
                     "name Anna Lopez. Shall I book it?")
    reply = await call.say("yes please")
    assert reply.startswith("Great, your table is booked.")
    assert reply.endswith("anything else I can help you with?")
    reply = await call.say("no thanks")
    assert reply == "Thanks for calling The Olive Tree. Goodbye!"
    assert [(c.name, c.arguments) for c in call.calls] == [("hang_up", "{}")]
    assert call.finish is not None and call.finish.reason == "tool_calls"


async def test_slots_are_asked_one_by_one_and_misheard_numbers_still_count(call: Call) -> None:
    assert (await call.say("make a reservation")).endswith("For how many people?")
    assert await call.say("for") == "For which day?"  # STT wrote "for" for "four"
    assert await call.say("on friday") == "And at what time?"
    assert await call.say("eight o'clock") == "And what name should I put the booking under?"
    reply = await call.say("Sam")
    assert "table for 4 on Friday, November 27 at 8 PM, under the name Sam" in reply


async def test_a_miss_reprompts_the_slot_and_values_out_of_range_are_refused(call: Call) -> None:
    await call.say("book a table")
    assert await call.say("purple elephants") == (
        "Sorry, how many people will there be? We take tables for one to twelve.")
    assert (await call.say("we are forty")).startswith("Sorry, how many people")  # max 12
    assert await call.say("six of us") == "For which day?"
    await call.say("tomorrow")
    assert (await call.say("at eleven")).startswith("Sorry, what time")  # 11 AM/PM: closed
    assert await call.say("seven") == "And what name should I put the booking under?"


async def test_saying_no_to_the_confirmation_starts_the_slots_again(call: Call) -> None:
    await call.say("table for 2 tonight at 8 pm")
    confirm = await call.say("Kim")
    assert "table for 2 on Wednesday, November 25 at 8 PM" in confirm
    assert await call.say("no") == "No problem, let's go through it again. For how many people?"
    assert await call.say("three") == "For which day?"


async def test_a_question_mid_booking_is_answered_and_the_slot_asked_again(call: Call) -> None:
    await call.say("I want to book a table")
    reply = await call.say("wait, what time do you close")
    assert reply.startswith("We're open every day")
    assert reply.endswith("For how many people?")
    assert await call.say("two") == "For which day?"


async def test_asking_for_a_person_hands_off_with_a_transfer_call(call: Call) -> None:
    reply = await call.say("can I speak to a real persn please")
    assert reply == "Of course, let me put you through to a colleague."
    assert [(c.name, c.arguments) for c in call.calls] == [("transfer", FRONT_DESK)]
    assert call.finish is not None and call.finish.reason == "tool_calls"
    assert await call.result('{"ok": true}') == ""  # transferred: nothing more to say


async def test_a_failed_transfer_is_apologised_for_and_the_call_goes_on(call: Call) -> None:
    await call.say("opera tor")  # STT split "operator"
    assert call.calls[0].name == "transfer"
    reply = await call.result('{"ok": false, "error": "transfer_not_supported"}')
    assert reply == ("I'm sorry, I couldn't put you through right now. "
                     "Is there anything else I can help you with?")
    assert (await call.say("what are your opening hours")).startswith("We're open")


async def test_hand_off_and_goodbye_win_even_in_the_middle_of_a_booking(call: Call) -> None:
    await call.say("book a table for 2")
    await call.say("just put me through to the manager")
    assert [c.name for c in call.calls] == ["transfer"]
    other = Call(call.agent)
    await other.turn()
    await other.say("book a table")
    assert await other.say("actually goodbye") == "Thanks for calling The Olive Tree. Goodbye!"
    assert [c.name for c in other.calls] == ["hang_up"]
    assert await other.say("hello?") == "Thank you for calling. Goodbye!"  # the call has ended
    assert [c.name for c in other.calls] == ["hang_up"]


async def test_three_misses_in_a_row_fall_back_to_a_person(call: Call) -> None:
    first = await call.say("the weather is lovely")
    second = await call.say("blah blah")
    assert first.startswith("Sorry, I didn't catch that.") and first != second
    assert not call.calls
    third = await call.say("purple")
    assert third == ("I'm sorry, I'm having trouble understanding. "
                     "Let me put you through to a colleague.")
    assert [(c.name, c.arguments) for c in call.calls] == [("transfer", FRONT_DESK)]


async def test_a_match_resets_the_miss_count(call: Call) -> None:
    await call.say("mumble")
    await call.say("mumble mumble")
    assert (await call.say("where is the restaurant")).startswith("We're at")
    await call.say("mumble")
    assert not call.calls  # two misses, a hit, one miss: no fallback yet


async def test_yes_and_no_after_anything_else(call: Call) -> None:
    await call.say("what's your address")
    assert await call.say("yeah") == "Sure, what can I help you with?"
    await call.say("is there parking")
    assert await call.say("nope that's all") == "Thanks for calling The Olive Tree. Goodbye!"
    assert [c.name for c in call.calls] == ["hang_up"]


async def test_an_intent_tool_gets_the_slot_values_and_its_result_decides(
    script: FlowScript,
) -> None:
    intents = [msgspec.structs.replace(i, tool="record_booking") if i.name == "book_table"
               else i for i in script.intents]
    agent = FlowAgent(msgspec.structs.replace(script, intents=intents), today=lambda: WEDNESDAY)
    for result, expected in [('{"ok": true}', "Great, your table is booked."),
                             ('{"error": "calendar full"}', "I'm sorry, something went wrong")]:
        call = Call(agent)
        await call.turn()
        await call.say("table for 4 on friday at 7")
        await call.say("Anna")
        assert await call.say("yes") == ""  # nothing is promised before the tool answers
        assert [c.name for c in call.calls] == ["record_booking"]
        assert msgspec.json.decode(call.calls[0].arguments) == {
            "intent": "book_table", "people": "4", "day": "2026-11-27", "time": "19:00",
            "name": "Anna"}
        assert (await call.result(result)).startswith(expected)


async def test_a_tool_the_call_did_not_offer_is_refused_with_the_fix(agent: FlowAgent) -> None:
    call = Call(agent, tools=[ToolSpec(name="hang_up", description="End the call.")])
    await call.turn()
    with pytest.raises(ProviderRejected, match="`transfer`, which the call did not offer"):
        await call.say("operator")


async def test_a_restarted_agent_resumes_the_conversation_from_the_messages(
    script: FlowScript,
) -> None:
    """The call actor persists messages after each turn; a new agent replays them."""
    first = Call(FlowAgent(script, today=lambda: WEDNESDAY))
    await first.turn()
    await first.say("book a table for 3")
    await first.say("saturday")
    resumed = Call(FlowAgent(script, today=lambda: WEDNESDAY))
    resumed.messages = list(first.messages)
    assert await resumed.say("9 pm") == await first.say("9 pm")
    assert await resumed.say("Lee") == await first.say("Lee")
    assert "table for 3 on Saturday, November 28 at 9 PM, under the name Lee" in first.messages[-1].content


async def test_replies_are_ready_in_well_under_a_millisecond(call: Call) -> None:
    """The flow agent's time to first token (the figure docs/providers.md quotes)."""
    timings = []
    for text in ["what time do you close", "book a table for four tomorrow at 7", "Anna",
                 "yes", "where are you"]:
        call.messages.append(ChatMessage(role="user", content=text))
        started = time.perf_counter()
        stream = call.agent.stream(call.messages, TOOLS)
        await anext(stream)
        timings.append(time.perf_counter() - started)
        rest = [e async for e in stream]
        text_out = "".join(e.text for e in rest if isinstance(e, LlmText))
        call.messages.append(ChatMessage(role="assistant", content=text_out))
    assert max(timings) < 0.005, timings  # generous: measured ~0.1-0.4 ms on 2 cores


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(utterances=st.lists(st.text(max_size=60), min_size=1, max_size=6))
def test_any_utterance_in_any_state_gets_an_answer_not_a_crash(
    script: FlowScript, utterances: list[str],
) -> None:
    engine = FlowEngine(script)
    state, _ = engine.greet()
    for prefix in ([], ["book a table"], ["book a table", "2", "friday", "7", "Jo"]):
        state = FlowState()
        for text in [*prefix, *utterances]:
            state, reply = engine.hear(state, text, WEDNESDAY)
            assert reply.text or reply.calls


# -- the script file ---------------------------------------------------------------------------


def test_the_demo_script_loads_and_can_sit_under_a_flow_key() -> None:
    script = load_flow(DEMO)
    assert [i.name for i in script.intents][:2] == ["book_table", "opening_hours"]
    indented = "flow:\n" + "".join(f"  {line}\n" for line in DEMO.read_text().splitlines())
    assert parse_flow(indented) == script


BASE = """\
greeting: Hello.
transfer_to: "sip:desk@example.org"
intents:
  - name: book
    phrases: [book a table]
"""


@pytest.mark.parametrize(("tail", "line", "message"), [
    ("    sayy: hi\n", 6, "intents[0]: Object contains unknown field `sayy`"),
    ("    slots:\n      - name: n\n        prompt: How many?\n        kind: count\n", 9,
     "intents[0].slots[0].kind: Invalid enum value 'count'"),
    ("    slots:\n      - name: People\n        prompt: How many?\n", 7,
     "intents[0].slots[0].name: Expected `str` matching regex"),
    ("match_threshold: 120\n", 6, "match_threshold: Expected `float` <= 100.0"),
    ("    confirm: For {people}?\n", 6, "placeholder `{people}` is not a slot"),
    ("  - name: book\n    phrases: [booking]\n", 6, "intent `book` is already intents[0]"),
    ("    phrases: [again]\n", 6, "key `phrases` repeats the one on line 5"),
    ("    say: [unclosed\n", 7, "YAML syntax"),
])
def test_script_errors_name_the_line(tail: str, line: int, message: str) -> None:
    with pytest.raises(FlowFileError) as error:
        parse_flow(BASE + tail, source="demo.yaml")
    assert str(error.value).startswith(f"demo.yaml:{line}:"), str(error.value)
    assert message in str(error.value)


def test_a_transfer_needs_a_target() -> None:
    text = BASE.replace('transfer_to: "sip:desk@example.org"\n', "") + "    then: transfer\n"
    text += "fallback:\n  then: hang_up\n"
    with pytest.raises(FlowFileError, match=r"^<flow>:5:11: intents\[0\].then: `then: "
                                            r"transfer` needs `transfer_to`"):
        parse_flow(text)


def test_an_invalid_script_is_refused_by_the_agent_too(script: FlowScript) -> None:
    broken = msgspec.structs.replace(script, transfer_to="")
    with pytest.raises(ProviderRejected, match="needs `transfer_to`"):
        FlowAgent(broken)


# -- slot extractors, as a caller says things ---------------------------------------------------

PEOPLE_SLOT = Slot(name="people", prompt="How many?", kind="number", min=1, max=12)
TIME_SLOT = Slot(name="time", prompt="When?", kind="time", earliest="12:00", latest="22:00")
DATE_SLOT = Slot(name="day", prompt="Which day?", kind="date")


@pytest.mark.parametrize(("slot", "heard", "asked", "value"), [
    (PEOPLE_SLOT, "for", True, "4"),                 # STT's "for" as the whole answer
    (PEOPLE_SLOT, "a party of 8", False, "8"),
    (PEOPLE_SLOT, "there will be six of us", True, "6"),
    (PEOPLE_SLOT, "just me", True, "1"),
    (PEOPLE_SLOT, "book a table for tomorrow", False, None),  # "for" is not four here
    (PEOPLE_SLOT, "twenty", True, None),             # above max
    (TIME_SLOT, "seven", True, "19:00"),             # the evening reading is in the window
    (TIME_SLOT, "seven", False, None),               # a bare number is no time unprompted
    (TIME_SLOT, "7:30 p.m.", False, "19:30"),
    (TIME_SLOT, "half past seven", True, "19:30"),
    (TIME_SLOT, "quarter to 8", True, "19:45"),
    (TIME_SLOT, "10 past 7", True, "19:10"),
    (TIME_SLOT, "table for 2 at 7", True, "19:00"),  # the 2 is people, the 7 the time
    (TIME_SLOT, "noon", True, "12:00"),
    (TIME_SLOT, "at 11", True, None),                # neither 11:00 nor 23:00 is open
    (DATE_SLOT, "to morrow", True, "2026-11-26"),    # STT split the word
    (DATE_SLOT, "the day after tomorrow", True, "2026-11-27"),
    (DATE_SLOT, "on wendsday", True, "2026-11-25"),  # today is a Wednesday
    (DATE_SLOT, "next wednesday", True, "2026-12-02"),
    (DATE_SLOT, "the 14th", True, "2026-12-14"),     # the 14th has passed this month
    (DATE_SLOT, "march 14th", True, "2027-03-14"),
    (DATE_SLOT, "the twenty first of december", True, "2026-12-21"),
])
def test_slot_values_are_read_from_what_callers_say(
    slot: Slot, heard: str, asked: bool, value: str | None,
) -> None:
    found = extract(slot, normalize(heard), heard, asked=asked, today=WEDNESDAY)
    assert (found.value.value if found else None) == value


@pytest.mark.parametrize(("heard", "answer"), [
    ("yes", "yes"), ("yeah that's right", "yes"), ("sure", "yes"), ("no problem", "yes"),
    ("nope", "no"), ("not really", "no"), ("I don't think so", "no"), ("maybe", None)])
def test_yes_and_no_in_their_many_forms(heard: str, answer: str | None) -> None:
    found = extract_yes_no(normalize(heard))
    assert (found.value.value if found else None) == answer
