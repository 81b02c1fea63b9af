"""Accounting around one LLM call: budget before, price and ledger record after.

:class:`Accountant` is what the request path (the OpenAI wrapper, ``@cached``) calls::

    meter = accountant.begin(CallRequest(provider="openai", model="gpt-4o-mini",
                                         messages=messages, max_output_tokens=500))
    try:
        response = client.chat.completions.create(...)
    except Exception as exc:
        meter.failed(exc)                 # releases the reservation, records the error
        raise
    meter.ok(TokenUsage.from_provider(response.usage), model_served=response.model)

``begin`` reserves the worst-case cost when budgets are configured and raises
:class:`~accounting.BudgetExceeded` (after recording the refusal) when a limit would be
crossed. ``ok`` prices the provider's usage, settles the reservation and writes the record
durably before it returns. A hit is one call: :meth:`Accountant.hit`.

The decisions (worst case, which model prices the call) are pure functions on plain values;
the sync and async faces only differ in how they call the budget store and the ledger.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from accounting._exceptions import BudgetExceeded, BudgetStoreError
from accounting.attribute import Attribution, current_attribution
from accounting.budgets import Budgets, Reservation
from accounting.export.call import CallEnd, CallExporter, CallHandle, CallStart
from accounting.ledger import Ledger, default_ledger
from accounting.money import ZERO, Cost
from accounting.plan import CallRequest, served_cost, worst_case
from accounting.pricing import PriceBook
from accounting.record import CacheOutcome, CallRecord, Status
from accounting.tokens import estimate_prompt_tokens
from accounting.usage import TokenUsage

__all__ = ["Accountant", "CallRequest", "Meter", "collecting", "worst_case"]

log = logging.getLogger("accounting.meter")

# Records written inside `with collecting() as records:` (what a @cached function spent).
_collectors: ContextVar[tuple[list[CallRecord], ...]] = ContextVar(
    "accounting.collectors", default=()
)


@contextlib.contextmanager
def collecting() -> Iterator[list[CallRecord]]:
    """Collect the records the code inside writes (in this context and the tasks it starts).

    ``@cached`` uses it to learn what a miss spent, so a later hit can report it as saved.
    Nested uses each see every record written inside them.
    """
    records: list[CallRecord] = []
    token = _collectors.set((*_collectors.get(), records))
    try:
        yield records
    finally:
        _collectors.reset(token)


class Meter:
    """One call in flight: finish it with :meth:`ok` or :meth:`failed` (or their ``a`` twins)."""

    __slots__ = (
        "_accountant",
        "_done",
        "_handle",
        "_started",
        "_t0",
        "attribution",
        "request",
        "reservation",
    )

    def __init__(
        self,
        accountant: Accountant,
        request: CallRequest,
        *,
        attribution: Attribution,
        reservation: Reservation | None,
        started: float,
        t0: float,
        handle: CallHandle | None = None,
    ) -> None:
        self._accountant = accountant
        self._handle = handle
        self.request = request
        self.attribution = attribution
        self.reservation = reservation
        self._started = started
        self._t0 = t0
        self._done = False

    def _record(self, **fields: Any) -> CallRecord:
        if self._done:
            raise RuntimeError("this call was already recorded")
        self._done = True
        return CallRecord(
            time=self._started,
            provider=self.request.provider,
            operation=self.request.operation,
            model_requested=self.request.model,
            latency=time.perf_counter() - self._t0,
            attribution=self.attribution,
            **fields,
        )

    def _ok_record(
        self,
        usage: TokenUsage,
        model_served: str | None,
        cache: CacheOutcome,
        compression_tokens_saved: int,
    ) -> CallRecord:
        cost = served_cost(self._accountant.prices, usage, self.request, model_served)
        return self._record(
            model_served=model_served,
            usage=usage,
            cost=cost,
            cache=cache,
            compression_tokens_saved=compression_tokens_saved,
        )

    def _settled(self, record: CallRecord) -> Decimal:
        # An unpriced call settles at its reservation: the budget keeps what it may have cost.
        if record.cost is not None:
            return record.cost.total
        return self.reservation.amount if self.reservation is not None else ZERO

    def ok(
        self,
        usage: TokenUsage,
        *,
        model_served: str | None = None,
        cache: CacheOutcome = CacheOutcome.MISS,
        compression_tokens_saved: int = 0,
        end: CallEnd | None = None,
    ) -> CallRecord:
        """The provider answered: price ``usage``, settle, write the record durably, return it.

        ``end`` (response id, finish reasons) goes to the exporter, if one is configured.
        """
        record = self._ok_record(usage, model_served, cache, compression_tokens_saved)
        budgets = self._accountant.budgets
        if budgets is not None and self.reservation is not None:
            budgets.settle(self.reservation, self._settled(record))
        return self._accountant._write(record, self._handle, end)

    async def aok(
        self,
        usage: TokenUsage,
        *,
        model_served: str | None = None,
        cache: CacheOutcome = CacheOutcome.MISS,
        compression_tokens_saved: int = 0,
        end: CallEnd | None = None,
    ) -> CallRecord:
        """:meth:`ok` for asyncio code (store calls run in worker threads)."""
        record = self._ok_record(usage, model_served, cache, compression_tokens_saved)
        budgets = self._accountant.budgets
        if budgets is not None and self.reservation is not None:
            await budgets.asettle(self.reservation, self._settled(record))
        return await self._accountant._awrite(record, self._handle, end)

    def _failed_record(self, exc: BaseException, usage: TokenUsage | None) -> CallRecord:
        spent = usage if usage is not None else TokenUsage()
        cost = (
            Cost()
            if usage is None
            else served_cost(self._accountant.prices, usage, self.request, None)
        )
        return self._record(
            usage=spent,
            cost=cost,
            cache=CacheOutcome.MISS,
            status=Status.PROVIDER_ERROR,
            error_type=type(exc).__name__,
        )

    def failed(self, exc: BaseException, *, usage: TokenUsage | None = None) -> CallRecord:
        """The call failed: release the reservation (or settle what ``usage`` says was billed)."""
        record = self._failed_record(exc, usage)
        budgets = self._accountant.budgets
        if budgets is not None and self.reservation is not None:
            if usage is None:
                budgets.release(self.reservation)
            else:
                budgets.settle(self.reservation, self._settled(record))
        return self._accountant._write(record, self._handle, CallEnd(error=exc))

    async def afailed(self, exc: BaseException, *, usage: TokenUsage | None = None) -> CallRecord:
        """:meth:`failed` for asyncio code."""
        record = self._failed_record(exc, usage)
        budgets = self._accountant.budgets
        if budgets is not None and self.reservation is not None:
            if usage is None:
                await budgets.arelease(self.reservation)
            else:
                await budgets.asettle(self.reservation, self._settled(record))
        return await self._accountant._awrite(record, self._handle, CallEnd(error=exc))


@dataclass(slots=True, kw_only=True)
class Accountant:
    """Budgets, prices and the ledger, applied around each call.

    Args:
        ledger: where records go; default the embedded SQLite ledger (:func:`default_ledger`).
        prices: the price book; default genai-prices's bundled data (no overrides).
        budgets: limits to enforce before calls; ``None`` enforces none.
        exporter: where calls go as spans and metrics
            (:func:`accounting.export.configure_otel`); ``None`` exports nothing.
        estimate_margin: factor on a prompt count that is only an estimate (another
            provider's model, images, tools) before the worst case is reserved.

    Attributes:
        plan_errors: calls whose worst case could not be computed (counted, logged, and
            handled by the budgets' ``on_unpriced`` policy).
    """

    ledger: Ledger = field(default_factory=default_ledger)
    prices: PriceBook = field(default_factory=PriceBook)
    budgets: Budgets | None = None
    exporter: CallExporter | None = None
    estimate_margin: Decimal = Decimal("1.5")
    plan_errors: int = field(default=0, init=False)

    # -- before the call ----------------------------------------------------------------------

    def _plan(self, request: CallRequest) -> tuple[Attribution, Decimal | None]:
        attribution = request.attribution or current_attribution()
        if self.budgets is None or not self.budgets.config.limits:
            return attribution, None
        try:
            prompt = request.prompt_tokens
            if prompt is None and request.messages is not None:
                estimate = estimate_prompt_tokens(
                    request.messages, request.model, tools=request.tools
                )
                prompt = estimate.tokens
                if estimate.estimated:
                    # A count with another model's tokenizer (or images, tools) may be low;
                    # the margin also moves a prompt near a price cliff onto the dear side.
                    prompt = math.ceil(prompt * self.estimate_margin)
            price = self.prices.price_for(request.model, request.provider)
            return attribution, worst_case(price, prompt, request.max_output_tokens)
        except Exception as exc:
            # Counting or pricing a shape we do not know must not fail the call: its worst
            # case is unknown, and the budgets' on_unpriced policy decides.
            self.plan_errors += 1
            log.warning(
                "cannot bound the cost of a %s call to %s (%s); treating it as unpriced",
                request.operation,
                request.model,
                type(exc).__name__,
            )
            return attribution, None

    def _refusal(
        self,
        request: CallRequest,
        attribution: Attribution,
        started: float,
        t0: float,
        exc: Exception,
    ) -> CallRecord:
        return CallRecord(
            time=started,
            provider=request.provider,
            operation=request.operation,
            model_requested=request.model,
            cost=Cost(),
            cache=CacheOutcome.BYPASS,
            latency=time.perf_counter() - t0,
            attribution=attribution,
            status=Status.REFUSED,
            error_type=type(exc).__name__,
        )

    def begin(self, request: CallRequest) -> Meter:
        """Start accounting a call: reserve its worst case against the budgets.

        Raises:
            BudgetExceeded: a limit would be crossed; the refusal is recorded, the provider
                must not be called.
            BudgetStoreError: the budget store failed and its policy is to refuse (also
                recorded as a refusal).
        """
        started, t0 = time.time(), time.perf_counter()
        handle = self._start_span(request)
        attribution, amount = self._plan(request)
        reservation = None
        if self.budgets is not None and self.budgets.config.limits:
            try:
                reservation = self.budgets.reserve(attribution, amount)
            except (BudgetExceeded, BudgetStoreError) as exc:
                refusal = self._refusal(request, attribution, started, t0, exc)
                self._write(refusal, handle, CallEnd(error=exc))
                raise
        return Meter(
            self,
            request,
            attribution=attribution,
            reservation=reservation,
            started=started,
            t0=t0,
            handle=handle,
        )

    async def abegin(self, request: CallRequest) -> Meter:
        """:meth:`begin` for asyncio code (store calls run in worker threads)."""
        started, t0 = time.time(), time.perf_counter()
        handle = self._start_span(request)
        attribution, amount = self._plan(request)
        reservation = None
        if self.budgets is not None and self.budgets.config.limits:
            try:
                reservation = await self.budgets.areserve(attribution, amount)
            except (BudgetExceeded, BudgetStoreError) as exc:
                refusal = self._refusal(request, attribution, started, t0, exc)
                await self._awrite(refusal, handle, CallEnd(error=exc))
                raise
        return Meter(
            self,
            request,
            attribution=attribution,
            reservation=reservation,
            started=started,
            t0=t0,
            handle=handle,
        )

    # -- calls that never reach the provider --------------------------------------------------

    def _hit_record(
        self,
        *,
        provider: str,
        model: str,
        operation: str,
        tier: str | None,
        saved: Decimal | None,
        latency: float,
        model_served: str | None,
        attribution: Attribution | None,
    ) -> CallRecord:
        return CallRecord(
            time=time.time() - latency,
            provider=provider,
            operation=operation,
            model_requested=model,
            model_served=model_served,
            cost=Cost(),
            cache=CacheOutcome.HIT,
            cache_tier=tier,
            saved=saved,
            latency=latency,
            attribution=attribution or current_attribution(),
        )

    def record(self, record: CallRecord) -> CallRecord:
        """Write the record of a call made without a :class:`Meter` (already spent, so no
        budget is asked): to the ledger, the records being collected, and the exporter."""
        return self._write(record)

    async def arecord(self, record: CallRecord) -> CallRecord:
        """:meth:`record` for asyncio code."""
        return await self._awrite(record)

    def hit(
        self,
        *,
        provider: str,
        model: str,
        operation: str = "chat",
        tier: str | None,
        saved: Decimal | None,
        latency: float = 0.0,
        model_served: str | None = None,
        attribution: Attribution | None = None,
    ) -> CallRecord:
        """Record a cache hit: $0 spent, ``saved`` (the original call's cost; ``None`` unpriced).

        Hit records are batched by the ledger (see :class:`~accounting.ledger.Ledger`).
        """
        return self._write(
            self._hit_record(
                provider=provider,
                model=model,
                operation=operation,
                tier=tier,
                saved=saved,
                latency=latency,
                model_served=model_served,
                attribution=attribution,
            )
        )

    async def ahit(
        self,
        *,
        provider: str,
        model: str,
        operation: str = "chat",
        tier: str | None,
        saved: Decimal | None,
        latency: float = 0.0,
        model_served: str | None = None,
        attribution: Attribution | None = None,
    ) -> CallRecord:
        """:meth:`hit` for asyncio code."""
        return await self._awrite(
            self._hit_record(
                provider=provider,
                model=model,
                operation=operation,
                tier=tier,
                saved=saved,
                latency=latency,
                model_served=model_served,
                attribution=attribution,
            )
        )

    # -- writing ------------------------------------------------------------------------------

    def _start_span(self, request: CallRequest) -> CallHandle | None:
        if self.exporter is None:
            return None
        return self.exporter.start_call(
            CallStart(
                provider=request.provider,
                request_model=request.model,
                operation=request.operation,
                server_address=request.server_address,
                server_port=request.server_port,
                params=request.params or {},
                messages=request.messages,
            )
        )

    def _delivered(
        self, record: CallRecord, handle: CallHandle | None, end: CallEnd | None
    ) -> None:
        for records in _collectors.get():
            records.append(record)
        if self.exporter is not None:
            if handle is not None:
                self.exporter.end_call(handle, record, end)
            else:
                self.exporter.export_record(record, end=end)

    def _write(
        self, record: CallRecord, handle: CallHandle | None = None, end: CallEnd | None = None
    ) -> CallRecord:
        self.ledger.append(record)
        self._delivered(record, handle, end)
        return record

    async def _awrite(
        self, record: CallRecord, handle: CallHandle | None = None, end: CallEnd | None = None
    ) -> CallRecord:
        await self.ledger.aappend(record)
        self._delivered(record, handle, end)
        return record

    def close(self) -> None:
        """Flush and close the ledger, the budget store and the exporter."""
        if self.exporter is not None:
            self.exporter.shutdown()
        self.ledger.close()
        if self.budgets is not None:
            self.budgets.close()
