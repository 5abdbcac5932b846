using System.Buffers;
using System.Diagnostics;
using System.Threading.Channels;
using Analytics.Store;
using Microsoft.Extensions.Logging;

namespace Analytics.Events;

/// <summary>
/// From "an event happened" to "it is in ClickHouse". Producers write into a bounded single-reader
/// channel and never wait: when it is full they spill to the disk spool. One background loop batches
/// by size or time, encodes each batch as one ClickHouse Native block and inserts it with an idempotent token per batch; while the store fails, batches go
/// to the spool and are replayed in order, with backoff, once it answers again. Disposal flushes.
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
    private TimeSpan _backoff;
    private long _nextReplayAt;

    // Counters: written with Interlocked by whichever side owns the event at that moment.
    private long _published;
    private long _inserted;
    private long _spooled;
    private long _spilled;
    private long _replayed;
    private long _quarantined;
    private long _batches;
    private long _insertFailures;
    private long _oldestPendingTicks;
    private volatile bool _storeHealthy = true;
    private volatile TaskCompletionSource _flushRequested = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private long _lastSpillWarning;
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
        if (Volatile.Read(ref _disposed) != 0)
        {
            return false;
        }

        Interlocked.Increment(ref _published);
        if (_channel.Writer.TryWrite(smtpEvent))
        {
            return true;
        }

        // Memory is full: the store is slower than the listener. Keep the event on disk instead of
        // blocking the SMTP session or dropping it.
        _spool.Spill(smtpEvent);
        Interlocked.Increment(ref _spilled);
        var now = Stopwatch.GetTimestamp();
        var last = Interlocked.Read(ref _lastSpillWarning);
        if (Stopwatch.GetElapsedTime(last, now) > TimeSpan.FromSeconds(10) && Interlocked.CompareExchange(ref _lastSpillWarning, now, last) == last)
        {
            LogSpilling(_logger, _options.Capacity, Interlocked.Read(ref _spilled));
        }

        return true;
    }

    public EventSinkStats Stats
    {
        get
        {
            var oldest = Interlocked.Read(ref _oldestPendingTicks);
            return new EventSinkStats(
                Interlocked.Read(ref _published), Interlocked.Read(ref _inserted), Interlocked.Read(ref _spooled),
                Interlocked.Read(ref _spilled), Interlocked.Read(ref _replayed), Interlocked.Read(ref _quarantined),
                Interlocked.Read(ref _batches), Interlocked.Read(ref _insertFailures), _spool.Count, _storeHealthy,
                oldest == 0 ? TimeSpan.Zero : Stopwatch.GetElapsedTime(oldest));
        }
    }

    /// <summary>
    /// Waits until every event published before the call is in the store (or, while the store is down,
    /// in the spool). Returns true when all of them reached the store.
    /// </summary>
    public async Task<bool> FlushAsync(CancellationToken cancellationToken = default)
    {
        var target = Interlocked.Read(ref _published);
        while (!cancellationToken.IsCancellationRequested)
        {
            var handled = Interlocked.Read(ref _inserted) + Interlocked.Read(ref _quarantined) + SpooledNotReplayed();
            if (handled >= target && !_spool.HasOpenSpill)
            {
                return _spool.Count == 0 && Interlocked.Read(ref _inserted) + Interlocked.Read(ref _quarantined) >= target;
            }

            _flushRequested.TrySetResult();
            await Task.Delay(5, cancellationToken);
        }

        cancellationToken.ThrowIfCancellationRequested();
        return false;
    }

    private long SpooledNotReplayed() => Interlocked.Read(ref _spooled) + Interlocked.Read(ref _spilled) - Interlocked.Read(ref _replayed) - Interlocked.Read(ref _quarantined);

    private async Task RunAsync()
    {
        // Two encoders and buffers: one batch is inserted while the next is encoded.
        var encoders = new[] { new EventBlockEncoder(_options.BatchSize), new EventBlockEncoder(_options.BatchSize) };
        var buffers = new[] { new ArrayBufferWriter<byte>(1 << 20), new ArrayBufferWriter<byte>(1 << 20) };
        var current = 0;
        Task inflight = Task.CompletedTask;
        var reader = _channel.Reader;
        var completed = false;
        while (!completed)
        {
            var encoder = encoders[current];
            var buffer = buffers[current];
            encoder.Reset();
            buffer.ResetWrittenCount();
            var count = 0;
            var started = _time.GetTimestamp();
            while (count < _options.BatchSize)
            {
                while (count < _options.BatchSize && reader.TryRead(out var e))
                {
                    if (count == 0)
                    {
                        Interlocked.Exchange(ref _oldestPendingTicks, Stopwatch.GetTimestamp());
                    }

                    encoder.Add(e);
                    count++;
                }

                if (count >= _options.BatchSize)
                {
                    break;
                }

                var remaining = _options.FlushInterval - _time.GetElapsedTime(started);
                if (remaining <= TimeSpan.Zero)
                {
                    break;
                }

                var flush = _flushRequested;
                if (flush.Task.IsCompleted)
                {
                    _flushRequested = new(TaskCreationOptions.RunContinuationsAsynchronously);
                    break;
                }

                var wait = reader.WaitToReadAsync().AsTask();
                using var delayCancel = new CancellationTokenSource();
                var delay = Task.Delay(remaining, _time, delayCancel.Token);
                var winner = await Task.WhenAny(wait, delay, flush.Task);
                await delayCancel.CancelAsync();
                if (winner == wait && !await wait)
                {
                    completed = true;
                    break;
                }

                if (winner != wait)
                {
                    break;
                }
            }

            // One insert in flight while the next batch is encoded.
            await inflight;
            if (count > 0)
            {
                encoder.WriteTo(buffer);
                var rows = buffer.WrittenMemory;
                var n = count;
                inflight = ShipAsync(rows, n);
                current ^= 1;
            }

            if (_spool.HasOpenSpill)
            {
                await inflight;
                _spool.SealSpill(NextToken(out _));
            }

            if (count == 0)
            {
                Interlocked.Exchange(ref _oldestPendingTicks, 0);
            }

            if (ReplayDue())
            {
                await inflight;
                await ReplayIfDueAsync(force: false);
            }
        }

        await inflight;
        _spool.SealSpill(NextToken(out _));
        await ReplayIfDueAsync(force: true);
    }

    private string NextToken(out long sequence)
    {
        sequence = _spool.NextSequence();
        return _tokenPrefix + "-" + sequence.ToString(System.Globalization.CultureInfo.InvariantCulture);
    }

    private async Task ShipAsync(ReadOnlyMemory<byte> rows, int count)
    {
        var token = NextToken(out var sequence);
        Interlocked.Increment(ref _batches);

        // Order is kept: while anything waits in the spool, new batches queue behind it.
        if (_storeHealthy && _spool.Count == 0)
        {
            try
            {
                await _store.InsertAsync(EventBlockEncoder.Table, null, InsertFormat.Native, rows, token, _stopping.Token);
                Interlocked.Add(ref _inserted, count);
                return;
            }
            catch (Exception ex) when (ex is not OperationCanceledException || !_stopping.IsCancellationRequested)
            {
                Interlocked.Increment(ref _insertFailures);
                MarkUnhealthy(ex);
            }
            catch (OperationCanceledException)
            {
                // Shutdown deadline passed: the batch goes to disk below.
            }
        }

        _spool.Write(sequence, token, count, rows.Span);
        Interlocked.Add(ref _spooled, count);
    }

    private void MarkUnhealthy(Exception ex)
    {
        if (_storeHealthy)
        {
            LogStoreDown(_logger, ex, _spool.SpoolDirectory);
        }

        _storeHealthy = false;
        _backoff = _backoff == TimeSpan.Zero ? TimeSpan.FromMilliseconds(100) : TimeSpan.FromTicks(Math.Min(_backoff.Ticks * 2, _options.MaxBackoff.Ticks));
        _nextReplayAt = _time.GetTimestamp() + (long)(_backoff.TotalSeconds * _time.TimestampFrequency);
    }

    private bool ReplayDue() => _storeHealthy ? _spool.Count > 0 : _time.GetTimestamp() >= _nextReplayAt;

    private async Task ReplayIfDueAsync(bool force)
    {
        if (!force && !_storeHealthy && _time.GetTimestamp() < _nextReplayAt)
        {
            return;
        }

        var pending = _spool.Pending();
        if (pending.Count == 0)
        {
            return;
        }

        var replayedBatches = 0;
        foreach (var batch in pending)
        {
            byte[] rows;
            try
            {
                rows = await File.ReadAllBytesAsync(batch.Path);
            }
            catch (FileNotFoundException)
            {
                continue;
            }

            try
            {
                await _store.InsertAsync(EventBlockEncoder.Table, null, InsertFormat.Native, rows, batch.Token, _stopping.Token);
            }
            catch (Exception ex)
            {
                if (ex is ClickHouseException chx && IsDataError(chx) && await StoreAnswersAsync())
                {
                    // The store is up but refuses these bytes: keep them aside rather than block the queue.
                    var where = _spool.Quarantine(batch);
                    Interlocked.Add(ref _quarantined, batch.Count);
                    LogQuarantined(_logger, ex, batch.Count, where);
                    continue;
                }

                Interlocked.Increment(ref _insertFailures);
                MarkUnhealthy(ex);
                return;
            }

            _spool.Remove(batch);
            Interlocked.Add(ref _replayed, batch.Count);
            Interlocked.Add(ref _inserted, batch.Count);
            replayedBatches++;
        }

        if (!_storeHealthy || replayedBatches > 0)
        {
            LogRecovered(_logger, replayedBatches);
        }

        _storeHealthy = true;
        _backoff = TimeSpan.Zero;
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

    [LoggerMessage(Level = LogLevel.Warning, Message = "Event queue full ({Capacity} events): spilling to the disk spool; {Spilled} events spilled so far")]
    private static partial void LogSpilling(ILogger logger, int capacity, long spilled);

    [LoggerMessage(Level = LogLevel.Error, Message = "Event store unavailable; batches go to the spool at {SpoolDirectory} and will be replayed")]
    private static partial void LogStoreDown(ILogger logger, Exception exception, string spoolDirectory);

    [LoggerMessage(Level = LogLevel.Information, Message = "Event store available; replayed {Batches} spooled batches")]
    private static partial void LogRecovered(ILogger logger, int batches);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Found {Files} spooled batches ({Events} events) in {SpoolDirectory}; replaying them")]
    private static partial void LogSpoolFound(ILogger logger, int files, long events, string spoolDirectory);

    [LoggerMessage(Level = LogLevel.Error, Message = "The store refused a spooled batch of {Events} events as data; kept at {Path}")]
    private static partial void LogQuarantined(ILogger logger, Exception exception, int events, string path);

    [LoggerMessage(Level = LogLevel.Critical, Message = "The event loop failed")]
    private static partial void LogLoopFailed(ILogger logger, Exception exception);

    [LoggerMessage(Level = LogLevel.Information, Message = "Event sink stopped: {Published} published, {Inserted} inserted, {SpoolFiles} batches left in the spool")]
    private static partial void LogStopped(ILogger logger, long published, long inserted, int spoolFiles);
}
