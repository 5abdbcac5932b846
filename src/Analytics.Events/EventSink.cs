using System.Buffers;
using System.Diagnostics;
using System.Globalization;
using System.Threading.Channels;
using Analytics.Store;
using Microsoft.Extensions.Logging;

namespace Analytics.Events;

/// <summary>
/// From "an event happened" to "it is in ClickHouse". Producers write into a bounded single-reader
/// channel and never wait: when it is full they spill to the disk spool. One background loop batches
/// by size or time, encodes each batch once (the events block and the batch's detection aggregates,
/// <see cref="EventBatch"/>) and inserts it with an idempotent token per batch; while the store fails,
/// batches go to the spool and are replayed in order, with backoff, once it answers again. While the
/// disk refuses the spool too, batches are held in memory (two at most) and retried; the loop stops
/// reading, the queue fills, and only then are new events refused. The loop never ends on an error:
/// it records it (<see cref="Stats"/>), backs off and goes on. Disposal flushes.
/// A caller that is about to tell a client its message was taken asks for its events to outlive the
/// process first (<see cref="WaitDurableAsync"/>): the loop drains the queue and appends what the batch
/// in collection holds to the batch's journal on disk (one write for every caller waiting, the batch
/// itself still growing), so a SIGKILL loses no event of a message answered 250.
/// Modelled on Serilog's BatchingSink.
/// </summary>
public sealed partial class EventSink : IEventPublisher, IAsyncDisposable
{
    // Written by producers, read by the loop.
    private readonly Channel<SmtpEvent> _channel;

    // Owned by the loop alone.
    private readonly IClickHouseStore _store;
    private readonly EventSinkOptions _options;
    private readonly EventSpool _spool;
    private readonly ILogger _logger;
    private readonly TimeProvider _time;
    private readonly string _tokenPrefix = "ev-" + Guid.NewGuid().ToString("N")[..12];
    private readonly Task _loop;
    private readonly CancellationTokenSource _stopping = new();
    // Batches neither the store nor the disk took. At most two: the loop stops collecting while any
    // is held, so only the batch in flight can join the one held.
    private readonly Queue<HeldBatch> _held = new();
    private TimeSpan _backoff;

    // Callers waiting for their events to outlive the process, and the signal that wakes the loop for them.
    private readonly Lock _durableLock = new();
    private List<TaskCompletionSource<bool>> _durableWaiters = [];
    private volatile TaskCompletionSource _durableRequested = new(TaskCreationOptions.RunContinuationsAsynchronously);

    // The journal of the batch in collection (owned by the loop): the events not yet in it, once any
    // caller has asked; the sequence and token the batch will be shipped with once it has a journal;
    // the batch in flight, and whether its journal held all of it.
    private readonly List<SmtpEvent> _unjournaled = [];
    private readonly ArrayBufferWriter<byte> _journalBuffer = new(1 << 16);
    private bool _journaling;
    private EventSpool.Journal? _journal;
    private long _batchSequence;
    private string? _batchToken;
    private Task _inflight = Task.CompletedTask;
    private bool _inflightJournaled = true;
    private long _nextRetryAt;
    private long _nextSealAt;

    // Counters: written with Interlocked by whichever side owns the event at that moment.
    private long _published;
    private long _queued;
    private long _settled;
    private long _refused;
    private long _inserted;
    private long _spooled;
    private long _spilled;
    private long _replayed;
    private long _batches;
    private long _insertFailures;
    private long _spoolFailures;
    private long _heldEvents;
    private long _loopErrors;
    private long _oldestPendingTicks;
    private volatile bool _storeHealthy = true;
    private volatile bool _spoolHealthy = true;
    private volatile string? _lastError;
    private volatile TaskCompletionSource _flushRequested = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private long _journaled;
    private long _durableTimeouts;
    private long _lastSpillWarning;
    private long _lastRefusalWarning;
    private int _disposed;

    public EventSink(IClickHouseStore store, EventSinkOptions options, string spoolDirectory, ILogger logger, TimeProvider? time = null)
    {
        _store = store;
        _options = options;
        _logger = logger;
        _time = time ?? TimeProvider.System;
        _spool = new EventSpool(options.SpoolDirectory ?? spoolDirectory);
        _channel = Channel.CreateBounded<SmtpEvent>(new BoundedChannelOptions(options.Capacity)
        {
            SingleReader = true,
            SingleWriter = false,
            FullMode = BoundedChannelFullMode.Wait,
            AllowSynchronousContinuations = false,
        });
        if (_spool.RecoveredEvents > 0 || _spool.QuarantinedFiles > 0)
        {
            LogRecoveredSpill(_logger, _spool.RecoveredEvents, _spool.QuarantinedFiles, _spool.QuarantinedEvents, _spool.SpoolDirectory);
        }

        var pending = _spool.Pending();
        if (pending.Count > 0)
        {
            LogSpoolFound(_logger, pending.Count, pending.Sum(p => (long)p.Count), _spool.SpoolDirectory);
        }

        _loop = Task.Run(RunAsync);
    }

    public string SpoolDirectory => _spool.SpoolDirectory;

    public bool Publish(SmtpEvent smtpEvent)
    {
        try
        {
            if (Volatile.Read(ref _disposed) != 0 || !IsWellFormed(smtpEvent))
            {
                Interlocked.Increment(ref _refused);
                return false;
            }

            if (_channel.Writer.TryWrite(smtpEvent))
            {
                Interlocked.Increment(ref _queued);
                Interlocked.Increment(ref _published);
                return true;
            }

            // Memory is full: the store is slower than the listener. Keep the event on disk instead of
            // blocking the SMTP session or dropping it.
            if (_spool.Spill(smtpEvent))
            {
                if (!_spoolHealthy && Interlocked.Read(ref _heldEvents) == 0)
                {
                    _spoolHealthy = true;
                }

                Interlocked.Increment(ref _published);
                var spilled = Interlocked.Increment(ref _spilled);
                if (Due(ref _lastSpillWarning))
                {
                    LogSpilling(_logger, _options.Capacity, spilled);
                }

                return true;
            }
        }
        catch (Exception ex)
        {
            // Nothing on this path may reach an SMTP session; a logger that throws included.
            _lastError = ex.Message;
        }

        _spoolHealthy = false;
        var refused = Interlocked.Increment(ref _refused);
        if (Due(ref _lastRefusalWarning))
        {
            try
            {
                LogRefusing(_logger, refused, _spool.SpoolDirectory);
            }
            catch (Exception)
            {
                // See above.
            }
        }

        return false;
    }

    // The encoder writes these fields without checks; a record built with `null!` is refused here.
    private static bool IsWellFormed(SmtpEvent? e) =>
        e is { Node: not null, ClientIp: not null, User: not null, Mechanism: not null, Status: not null, Sender: not null, Recipient: not null, RecipientDomain: not null, Detail: not null };

    // One warning per 10 s per kind, whichever producer gets there first.
    private static bool Due(ref long last)
    {
        var now = Stopwatch.GetTimestamp();
        var seen = Interlocked.Read(ref last);
        return (seen == 0 || Stopwatch.GetElapsedTime(seen, now) > TimeSpan.FromSeconds(10)) && Interlocked.CompareExchange(ref last, now, seen) == seen;
    }

    public EventSinkStats Stats
    {
        get
        {
            var oldest = Interlocked.Read(ref _oldestPendingTicks);
            var health = !_spoolHealthy ? EventSinkHealth.SpoolFailing : _storeHealthy ? EventSinkHealth.Healthy : EventSinkHealth.StoreDown;
            return new EventSinkStats(
                Interlocked.Read(ref _published), Interlocked.Read(ref _inserted), Interlocked.Read(ref _spooled),
                Interlocked.Read(ref _spilled), Interlocked.Read(ref _replayed), _spool.QuarantinedEvents,
                Interlocked.Read(ref _batches), Interlocked.Read(ref _insertFailures), _spool.Count, _storeHealthy,
                oldest == 0 ? TimeSpan.Zero : Stopwatch.GetElapsedTime(oldest))
            {
                Refused = Interlocked.Read(ref _refused),
                SpoolFailures = Interlocked.Read(ref _spoolFailures),
                Held = Interlocked.Read(ref _heldEvents),
                Recovered = _spool.RecoveredEvents,
                QuarantinedFiles = _spool.QuarantinedFiles,
                LoopErrors = Interlocked.Read(ref _loopErrors),
                Journaled = Interlocked.Read(ref _journaled),
                DurableTimeouts = Interlocked.Read(ref _durableTimeouts),
                Health = health,
                LastError = health == EventSinkHealth.Healthy ? null : _lastError,
            };
        }
    }

    /// <summary>
    /// Waits until every event published before the call is in the store or durably in the spool.
    /// Returns true when all of them reached the store.
    /// </summary>
    public async Task<bool> FlushAsync(CancellationToken cancellationToken = default)
    {
        var target = Interlocked.Read(ref _queued);
        while (!cancellationToken.IsCancellationRequested)
        {
            if (Interlocked.Read(ref _settled) >= target && Interlocked.Read(ref _heldEvents) == 0 && !_spool.HasOpenSpill)
            {
                if (_spool.Count == 0)
                {
                    return true;
                }

                // Spooled batches wait for the loop: wake it to replay them rather than wait out its interval.
                _flushRequested.TrySetResult();
                return false;
            }

            _flushRequested.TrySetResult();
            await Task.Delay(5, cancellationToken);
        }

        cancellationToken.ThrowIfCancellationRequested();
        return false;
    }

    /// <summary>
    /// Waits, at most <paramref name="timeout"/>, until every event published before the call would
    /// outlive the process: in the store, in the spool, or in the journal of the batch being collected.
    /// Callers answered together share one write. False when the time ran out (the events are still
    /// queued and go on to the store as usual) or the sink is stopping.
    /// </summary>
    public async ValueTask<bool> WaitDurableAsync(TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        if (Volatile.Read(ref _disposed) != 0)
        {
            return false;
        }

        var waiter = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
        lock (_durableLock)
        {
            _durableWaiters.Add(waiter);
        }

        _durableRequested.TrySetResult();
        try
        {
            return await waiter.Task.WaitAsync(timeout, _time, cancellationToken);
        }
        catch (TimeoutException)
        {
            Interlocked.Increment(ref _durableTimeouts);
            return false;
        }
        finally
        {
            // A caller that gave up is not waited for any more (the loop drops answered waiters).
            waiter.TrySetResult(false);
        }
    }

    private async Task RunAsync()
    {
        // One batch being collected, two encoded buffers: one is inserted while the next is encoded.
        var batch = new EventBatch(_options.BatchSize);
        var buffers = new[] { new ArrayBufferWriter<byte>(1 << 20), new ArrayBufferWriter<byte>(1 << 20) };
        var current = 0;
        var completed = false;
        while (!completed)
        {
            try
            {
                // Batches nobody took come first; while they stay, the queue is not read (it fills,
                // producers spill, and once the disk refuses that too they are refused).
                if (_held.Count > 0)
                {
                    await _inflight;
                    if (_time.GetTimestamp() >= _nextRetryAt)
                    {
                        // The spool first: replaying it is what frees the disk a held batch needs (and
                        // probes the store); then the held batches, to the store or to the spool.
                        await ReplayIfDueAsync(force: true);
                        await RetryHeldAsync();
                    }

                    if (_held.Count > 0)
                    {
                        await WaitForRetryAsync();
                        continue;
                    }
                }

                if (batch.Count == 0)
                {
                    completed = await CollectAsync(batch);
                }

                // One insert in flight while the next batch is collected and encoded (into the other buffer).
                if (batch.Count > 0)
                {
                    var buffer = buffers[current];
                    buffer.ResetWrittenCount();
                    batch.WriteTo(buffer);
                    var count = batch.Count;
                    await _inflight;

                    // A batch with a journal takes its last events into it too (one write per batch), so
                    // callers who wait while it is in flight need not wait for its insert.
                    if (_journal is not null)
                    {
                        WriteJournal();
                    }

                    var journal = _journal;
                    var journaled = journal is not null && _unjournaled.Count == 0;
                    var token = _batchToken ?? NextToken(out _batchSequence);
                    _journal = null;
                    _batchToken = null;
                    _unjournaled.Clear();
                    batch.Reset();
                    _inflight = ShipAsync(buffer.WrittenMemory, count, _batchSequence, token, journal);
                    _inflightJournaled = journaled;
                    current ^= 1;
                }
                else
                {
                    await _inflight;
                    Interlocked.Exchange(ref _oldestPendingTicks, 0);
                }

                if (_spool.HasOpenSpill)
                {
                    await _inflight;
                    SealSpill();
                }

                if (ReplayDue())
                {
                    await _inflight;
                    await ReplayIfDueAsync(force: false);
                }
            }
            catch (Exception ex)
            {
                // A bug or a failure nobody foresaw: record it, back off, go on. Events stay where they
                // were (the batch is only reset once its frame is written).
                Interlocked.Increment(ref _loopErrors);
                _lastError = ex.Message;
                LogLoopError(_logger, ex);
                await Backoff();
            }
        }

        await Finish();
    }

    private async Task Finish()
    {
        try
        {
            await _inflight;
            while (_held.Count > 0 && !_stopping.IsCancellationRequested)
            {
                await ReplayIfDueAsync(force: true);
                if (!await RetryHeldAsync())
                {
                    await WaitForRetryAsync();
                }
            }

            _nextSealAt = 0;
            SealSpill();
            await ReplayIfDueAsync(force: true);
        }
        catch (Exception ex)
        {
            Interlocked.Increment(ref _loopErrors);
            LogLoopError(_logger, ex);
        }

        if (Interlocked.Read(ref _heldEvents) > 0)
        {
            LogLostAtShutdown(_logger, Interlocked.Read(ref _heldEvents), _spool.SpoolDirectory);
        }

        lock (_durableLock)
        {
            foreach (var waiter in _durableWaiters)
            {
                waiter.TrySetResult(false);
            }

            _durableWaiters.Clear();
        }
    }

    // Fills the batch from the queue until it is full, the flush interval passes or a flush is asked
    // for. True when the queue is completed (disposal) and empty.
    private async Task<bool> CollectAsync(EventBatch batch)
    {
        var reader = _channel.Reader;
        var started = _time.GetTimestamp();
        while (batch.Count < _options.BatchSize)
        {
            Drain(batch);
            if (batch.Count >= _options.BatchSize)
            {
                return false;
            }

            if (_durableRequested.Task.IsCompleted && !await AnswerDurableWaitersAsync(batch))
            {
                return false;
            }

            var remaining = _options.FlushInterval - _time.GetElapsedTime(started);
            if (remaining <= TimeSpan.Zero)
            {
                return false;
            }

            var flush = _flushRequested;
            if (flush.Task.IsCompleted)
            {
                _flushRequested = new(TaskCreationOptions.RunContinuationsAsynchronously);
                return false;
            }

            var wait = reader.WaitToReadAsync().AsTask();
            using var delayCancel = new CancellationTokenSource();
            var delay = Task.Delay(remaining, _time, delayCancel.Token);
            var winner = await Task.WhenAny(wait, delay, flush.Task, _durableRequested.Task);
            await delayCancel.CancelAsync();
            if (winner == wait && !await wait)
            {
                return true;
            }

            if (winner == delay || winner == flush.Task)
            {
                return false;
            }
        }

        return false;
    }

    private void Drain(EventBatch batch)
    {
        var reader = _channel.Reader;
        while (batch.Count < _options.BatchSize && reader.TryRead(out var e))
        {
            if (batch.Count == 0)
            {
                Interlocked.Exchange(ref _oldestPendingTicks, Stopwatch.GetTimestamp());
            }

            batch.Add(e);
            if (_journaling)
            {
                _unjournaled.Add(e);
            }
        }
    }

    // Answers the callers waiting for durability. Every event they published before asking is by now
    // in the queue, in this batch, in the producers' spill, or shipped: the queue is drained into the
    // batch, the spill written, what the batch holds beyond its journal appended to it, and a batch
    // shipped without a whole journal awaited. False cuts the batch short (it is full, or not all of
    // it is in its journal: the first caller since start, or the disk refused the journal): it is
    // shipped now, and the callers are answered on the next round, once it has settled.
    private async Task<bool> AnswerDurableWaitersAsync(EventBatch batch)
    {
        _durableRequested = new(TaskCreationOptions.RunContinuationsAsynchronously);
        List<TaskCompletionSource<bool>> waiters;
        lock (_durableLock)
        {
            if (_durableWaiters.Count == 0)
            {
                return true;
            }

            (waiters, _durableWaiters) = (_durableWaiters, []);
        }

        waiters.RemoveAll(w => w.Task.IsCompleted);
        if (waiters.Count == 0)
        {
            return true;
        }

        Drain(batch);
        _spool.WriteSpillFrame();
        var journaled = _journaling ? WriteJournal() : batch.Count == 0;
        _journaling = true;
        if (!journaled || batch.Count >= _options.BatchSize)
        {
            lock (_durableLock)
            {
                waiters.AddRange(_durableWaiters);
                _durableWaiters = waiters;
            }

            _durableRequested.TrySetResult();
            return false;
        }

        if (!_inflightJournaled)
        {
            await _inflight;
        }

        foreach (var waiter in waiters)
        {
            waiter.TrySetResult(true);
        }

        return true;
    }

    // Appends the batch's events not yet in its journal as one group, in one write. False when the disk
    // refuses it (nothing is half written: the journal is cut back to its last whole frame).
    private bool WriteJournal()
    {
        if (_unjournaled.Count == 0)
        {
            return true;
        }

        try
        {
            if (_journal is null)
            {
                _batchToken ??= NextToken(out _batchSequence);
                _journal = _spool.OpenJournal(_batchSequence, _batchToken);
            }
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            _lastError = ex.Message;
            return false;
        }

        _journalBuffer.ResetWrittenCount();
        JournalCodec.Write(_journalBuffer, _unjournaled);
        if (!_journal.Append(_journalBuffer.WrittenSpan))
        {
            return false;
        }

        Interlocked.Add(ref _journaled, _unjournaled.Count);
        _unjournaled.Clear();
        return true;
    }

    private string NextToken(out long sequence)
    {
        sequence = _spool.NextSequence();
        return _tokenPrefix + "-" + sequence.ToString(CultureInfo.InvariantCulture);
    }

    // Never throws: the frame ends in the store, in the spool, or held in memory (its journal, if it
    // has one, kept until then).
    private async Task ShipAsync(ReadOnlyMemory<byte> frames, int count, long sequence, string token, EventSpool.Journal? journal)
    {
        Interlocked.Increment(ref _batches);

        // Order is kept: while anything waits in the spool, new batches queue behind it.
        if (_storeHealthy && _spool.Count == 0 && _held.Count == 0)
        {
            try
            {
                await EventFrame.InsertAsync(_store, frames, token, _stopping.Token);
                Interlocked.Add(ref _inserted, count);
                Interlocked.Add(ref _settled, count);
                journal?.Delete();
                if (!_spoolHealthy && !_spool.HasOpenSpill)
                {
                    // Nothing waits on the disk any more.
                    MarkSpoolHealthy();
                }

                return;
            }
            catch (Exception ex) when (ex is not OperationCanceledException || !_stopping.IsCancellationRequested)
            {
                Interlocked.Increment(ref _insertFailures);
                MarkStoreDown(ex);
            }
            catch (OperationCanceledException)
            {
                // Shutdown deadline passed: the batch goes to disk below.
            }
        }

        if (!TrySpool(sequence, token, count, frames.Span))
        {
            _held.Enqueue(new HeldBatch(frames.ToArray(), count, sequence, token, journal));
            Interlocked.Add(ref _heldEvents, count);
        }
        else
        {
            journal?.Delete();
        }

        Interlocked.Add(ref _settled, count);
    }

    private bool TrySpool(long sequence, string token, int count, ReadOnlySpan<byte> frames)
    {
        try
        {
            _spool.Write(sequence, token, count, frames);
            Interlocked.Add(ref _spooled, count);
            MarkSpoolHealthy();
            return true;
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            Interlocked.Increment(ref _spoolFailures);
            MarkSpoolFailing(ex);
            return false;
        }
    }

    // Held batches go to the store when it answers (nothing is spooled ahead of them then), else to
    // the disk. True when none is left.
    private async Task<bool> RetryHeldAsync()
    {
        while (_held.TryPeek(out var held))
        {
            var done = false;
            if (_spool.Count == 0 && !_stopping.IsCancellationRequested)
            {
                try
                {
                    await EventFrame.InsertAsync(_store, held.Frames, held.Token, _stopping.Token);
                    Interlocked.Add(ref _inserted, held.Count);
                    MarkStoreHealthy();
                    done = true;
                }
                catch (Exception ex) when (ex is not OperationCanceledException || !_stopping.IsCancellationRequested)
                {
                    Interlocked.Increment(ref _insertFailures);
                    MarkStoreDown(ex);
                }
                catch (OperationCanceledException)
                {
                    // Shutdown: try the disk below.
                }
            }

            if (!done && !TrySpool(held.Sequence, held.Token, held.Count, held.Frames))
            {
                ScheduleRetry();
                return false;
            }

            _held.Dequeue();
            held.Journal?.Delete();
            Interlocked.Add(ref _heldEvents, -held.Count);
        }

        // Nothing waits on the disk any more.
        MarkSpoolHealthy();
        return true;
    }

    private void SealSpill()
    {
        // A disk that refused the last try is given the backoff before the next one.
        if (_time.GetTimestamp() < _nextSealAt)
        {
            return;
        }

        if (_spool.SealSpill(NextToken(out _)))
        {
            _nextSealAt = 0;
            if (!_spoolHealthy && _held.Count == 0)
            {
                MarkSpoolHealthy();
            }

            return;
        }

        Interlocked.Increment(ref _spoolFailures);
        MarkSpoolFailing(new IOException("The disk refused to complete a spill segment of the event spool."));
        _nextSealAt = _time.GetTimestamp() + (long)(Math.Max(0.1, _backoff.TotalSeconds) * _time.TimestampFrequency);
    }

    private async Task WaitForRetryAsync()
    {
        var wait = TimeSpan.FromSeconds(Math.Max(0, (_nextRetryAt - _time.GetTimestamp()) / (double)_time.TimestampFrequency));
        if (wait <= TimeSpan.Zero || _stopping.IsCancellationRequested)
        {
            return;
        }

        // A flush request or disposal cuts the wait short; the retry time itself is not moved.
        using var cancel = CancellationTokenSource.CreateLinkedTokenSource(_stopping.Token);
        await Task.WhenAny(Task.Delay(wait, _time, cancel.Token), _flushRequested.Task, _channel.Reader.Completion);
        await cancel.CancelAsync();
    }

    private async Task Backoff()
    {
        ScheduleRetry();
        try
        {
            await Task.Delay(_backoff, _time, _stopping.Token);
        }
        catch (OperationCanceledException)
        {
        }
    }

    private void ScheduleRetry()
    {
        _backoff = _backoff == TimeSpan.Zero ? TimeSpan.FromMilliseconds(100) : TimeSpan.FromTicks(Math.Min(_backoff.Ticks * 2, _options.MaxBackoff.Ticks));
        _nextRetryAt = _time.GetTimestamp() + (long)(_backoff.TotalSeconds * _time.TimestampFrequency);
    }

    private void MarkStoreDown(Exception ex)
    {
        _lastError = ex.Message;
        if (_storeHealthy)
        {
            LogStoreDown(_logger, ex, _spool.SpoolDirectory);
        }

        _storeHealthy = false;
        ScheduleRetry();
    }

    private void MarkStoreHealthy()
    {
        _storeHealthy = true;
        if (_spoolHealthy)
        {
            _backoff = TimeSpan.Zero;
        }
    }

    private void MarkSpoolFailing(Exception ex)
    {
        _lastError = ex.Message;
        if (_spoolHealthy)
        {
            LogSpoolFailing(_logger, ex, _spool.SpoolDirectory);
        }

        _spoolHealthy = false;
    }

    private void MarkSpoolHealthy()
    {
        if (!_spoolHealthy)
        {
            LogSpoolRecovered(_logger, _spool.SpoolDirectory);
        }

        _spoolHealthy = true;
    }

    private bool ReplayDue() => _storeHealthy ? _spool.Count > 0 : _time.GetTimestamp() >= _nextRetryAt;

    private async Task ReplayIfDueAsync(bool force)
    {
        if (!force && !_storeHealthy && _time.GetTimestamp() < _nextRetryAt)
        {
            return;
        }

        var pending = _spool.Pending();
        if (pending.Count == 0)
        {
            if (_held.Count == 0 && !_storeHealthy && !force)
            {
                // Nothing spooled to probe the store with: the next batch is the probe.
                MarkStoreHealthy();
            }

            return;
        }

        var replayedBatches = 0;
        foreach (var batch in pending)
        {
            byte[] data;
            try
            {
                data = await File.ReadAllBytesAsync(batch.Path);
            }
            catch (FileNotFoundException)
            {
                continue;
            }

            try
            {
                if (batch.Legacy)
                {
                    // Written before the sink computed aggregates: the events alone.
                    await _store.InsertAsync(EventBlockEncoder.Table, null, InsertFormat.Native, data, batch.Token, _stopping.Token);
                }
                else
                {
                    await EventFrame.InsertAsync(_store, data, batch.Token, _stopping.Token);
                }
            }
            catch (Exception ex)
            {
                if (ex is InvalidDataException || (ex is ClickHouseException chx && IsDataError(chx) && await StoreAnswersAsync()))
                {
                    // The store is up but refuses these bytes (or they are torn): keep them aside rather
                    // than block the queue.
                    var where = _spool.Quarantine(batch);
                    LogQuarantined(_logger, ex, batch.Count, where);
                    continue;
                }

                Interlocked.Increment(ref _insertFailures);
                MarkStoreDown(ex);
                return;
            }

            try
            {
                _spool.Remove(batch);
            }
            catch (IOException ex)
            {
                // Replayed but still on disk: a second replay is dropped by its token.
                _lastError = ex.Message;
            }

            Interlocked.Add(ref _replayed, batch.Count);
            Interlocked.Add(ref _inserted, batch.Count);
            replayedBatches++;
        }

        if (!_storeHealthy || replayedBatches > 0)
        {
            LogRecovered(_logger, replayedBatches);
        }

        MarkStoreHealthy();
    }

    private static bool IsDataError(ClickHouseException ex) =>
        ex.ErrorName is "CANNOT_PARSE_INPUT_ASSERTION_FAILED" or "CANNOT_READ_ALL_DATA" or "INCORRECT_DATA"
            or "CANNOT_PARSE_TEXT" or "TOO_LARGE_STRING_SIZE" or "CANNOT_READ_ARRAY_FROM_TEXT" or "UNEXPECTED_END_OF_FILE"
            or "ILLEGAL_COLUMN" or "NO_SUCH_COLUMN_IN_TABLE" or "THERE_IS_NO_COLUMN";

    private async Task<bool> StoreAnswersAsync()
    {
        try
        {
            await _store.QueryAsync("SELECT 1 FROM events LIMIT 0", null, _stopping.Token);
            return true;
        }
        catch
        {
            return false;
        }
    }

    /// <summary>Stops taking events, ships what is queued (spooling it past the shutdown timeout).</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        _channel.Writer.TryComplete();
        _stopping.CancelAfter(_options.ShutdownTimeout);
        try
        {
            await _loop;
        }
        catch (Exception ex)
        {
            LogLoopFailed(_logger, ex);
        }

        var stats = Stats;
        LogStopped(_logger, stats.Published, stats.Inserted, stats.SpoolFiles);
        _spool.Dispose();
        _stopping.Dispose();
    }

    private sealed record HeldBatch(byte[] Frames, int Count, long Sequence, string Token, EventSpool.Journal? Journal);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Event queue full ({Capacity} events): spilling to the disk spool; {Spilled} events spilled so far")]
    private static partial void LogSpilling(ILogger logger, int capacity, long spilled);

    [LoggerMessage(Level = LogLevel.Error, Message = "Event queue full and the spool at {SpoolDirectory} refuses writes: events are being refused ({Refused} so far); SMTP sessions go on")]
    private static partial void LogRefusing(ILogger logger, long refused, string spoolDirectory);

    [LoggerMessage(Level = LogLevel.Error, Message = "Event store unavailable; batches go to the spool at {SpoolDirectory} and will be replayed")]
    private static partial void LogStoreDown(ILogger logger, Exception exception, string spoolDirectory);

    [LoggerMessage(Level = LogLevel.Error, Message = "The event spool at {SpoolDirectory} refuses writes (disk full?); batches are held in memory and retried")]
    private static partial void LogSpoolFailing(ILogger logger, Exception exception, string spoolDirectory);

    [LoggerMessage(Level = LogLevel.Information, Message = "The event spool at {SpoolDirectory} takes writes again")]
    private static partial void LogSpoolRecovered(ILogger logger, string spoolDirectory);

    [LoggerMessage(Level = LogLevel.Information, Message = "Event store available; replayed {Batches} spooled batches")]
    private static partial void LogRecovered(ILogger logger, int batches);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Found {Files} spooled batches ({Events} events) in {SpoolDirectory}; replaying them")]
    private static partial void LogSpoolFound(ILogger logger, int files, long events, string spoolDirectory);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Recovered {Events} events from spill segments left open by a crash; {Files} torn pieces ({Quarantined} events) set aside in {SpoolDirectory}/quarantine")]
    private static partial void LogRecoveredSpill(ILogger logger, long events, int files, long quarantined, string spoolDirectory);

    [LoggerMessage(Level = LogLevel.Error, Message = "The store refused a spooled batch of {Events} events as data; kept at {Path}")]
    private static partial void LogQuarantined(ILogger logger, Exception exception, int events, string path);

    [LoggerMessage(Level = LogLevel.Error, Message = "The event loop hit an error; it backs off and goes on")]
    private static partial void LogLoopError(ILogger logger, Exception exception);

    [LoggerMessage(Level = LogLevel.Critical, Message = "The event loop failed")]
    private static partial void LogLoopFailed(ILogger logger, Exception exception);

    [LoggerMessage(Level = LogLevel.Critical, Message = "Shutdown with {Events} events that neither the store nor the spool at {SpoolDirectory} would take: they are lost")]
    private static partial void LogLostAtShutdown(ILogger logger, long events, string spoolDirectory);

    [LoggerMessage(Level = LogLevel.Information, Message = "Event sink stopped: {Published} published, {Inserted} inserted, {SpoolFiles} batches left in the spool")]
    private static partial void LogStopped(ILogger logger, long published, long inserted, int spoolFiles);
}
