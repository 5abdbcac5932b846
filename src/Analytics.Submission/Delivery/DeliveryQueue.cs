using System.Buffers;
using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Text.Json;
using System.Threading.Channels;
using Analytics.Events;
using Microsoft.Extensions.Logging;

namespace Analytics.Submission.Delivery;

/// <summary>A message in the queue as an operator sees it (queue list / show).</summary>
public sealed record QueuedMessage(
    string Id, string Sender, string User, string Role, DateTimeOffset ReceivedAt, long Size, bool Held, bool Active,
    int Attempts, DateTimeOffset NextAttempt, string LastError, IReadOnlyList<RecipientView> Recipients);

public sealed record RecipientView(string Address, string Status, int Attempts, int Code, string Dsn, string Reply, string Hop, DateTimeOffset? At);

/// <summary>Counters and gauges for /metrics; counters count since start.</summary>
public sealed record DeliveryQueueStats(
    int Messages, int Active, int Deferred, int Held, long Bytes, TimeSpan OldestAge,
    long Delivered, long Bounced, long TempFailures, long Expired, long Discarded, long Deferrals, long DsnQueued, long Refused);

/// <summary>
/// The durable delivery queue on the mail spool. A message is its spool files (ID.eml, ID.json) plus,
/// once tried, ID.state (per-recipient status, attempts, next attempt, hold), rewritten durably after
/// every attempt. A recipient leaves the queue only on the next hop's 2xx (delivered) or a 5xx / the
/// queue lifetime (failed, a DSN to the sender queued durably first); the files go once every
/// recipient is done, envelope first, so a crash at any point leaves either the whole message or
/// nothing that is still owed. A crash between a next hop's 2xx and the state write delivers that
/// recipient again: at least once, never zero times.
/// <para>
/// Scheduling is in memory: a priority queue of next-attempt times feeds <see cref="DeliveryOptions.Concurrency"/>
/// workers; temporary failures back off like Postfix (minimal, doubling, maximal). On start every
/// message in the spool is loaded and scheduled at its recorded time.
/// </para>
/// </summary>
public sealed partial class DeliveryQueue : IMailQueue, IAsyncDisposable
{
    private readonly DeliveryOptions _options;
    private readonly string _serverName;
    private readonly string _node;
    private readonly MailSpool _spool;
    private readonly IEventPublisher _events;
    private readonly Func<string, bool> _isLocalDomain;
    private readonly ILogger _logger;
    private readonly TimeProvider _time;
    private readonly ConcurrentDictionary<string, Entry> _entries = new(StringComparer.Ordinal);

    // Scheduling: owned by _scheduleLock. Entries are pushed with the time they were scheduled for;
    // a popped item whose entry has since been rescheduled (ScheduledAt differs) is stale and skipped.
    private readonly Lock _scheduleLock = new();
    private readonly PriorityQueue<Entry, DateTimeOffset> _due = new();
    private readonly SemaphoreSlim _wake = new(0, int.MaxValue);
    private readonly Channel<Entry> _work = Channel.CreateUnbounded<Entry>(new UnboundedChannelOptions { SingleWriter = true });

    private readonly CancellationTokenSource _stopping = new();
    private readonly CancellationTokenSource _abort = new();
    private RouteTable? _routes;
    private Task _running = Task.CompletedTask;
    private long _bytes;
    private long _freeSpace = long.MaxValue;
    private long _freeSpaceCheckedAt = long.MinValue;

    private long _delivered;
    private long _bounced;
    private long _deferredRecipients;
    private long _expired;
    private long _discarded;
    private long _deferrals;
    private long _dsnQueued;
    private long _refused;

    public DeliveryQueue(DeliveryOptions options, string spoolDirectory, string serverName, string node, IEventPublisher events,
        Func<string, bool> isLocalDomain, ILogger logger, TimeProvider? time = null)
    {
        var validation = new DeliveryOptionsValidator().Validate(null, options);
        if (validation.Failed)
        {
            throw new Microsoft.Extensions.Options.OptionsValidationException(DeliveryOptions.SectionName, typeof(DeliveryOptions), validation.Failures);
        }

        _options = options;
        _serverName = serverName;
        _node = node;
        _spool = new MailSpool(spoolDirectory);
        _events = events;
        _isLocalDomain = isLocalDomain;
        _logger = logger;
        _time = time ?? TimeProvider.System;
    }

    public string SpoolDirectory => _spool.Directory;

    /// <summary>Whether workers deliver (a next hop is configured and <see cref="StartAsync"/> ran).</summary>
    public bool Delivering => _routes is not null;

    /// <summary>Loads every message in the spool; with <paramref name="deliver"/>, starts delivering them.</summary>
    public async Task StartAsync(bool deliver, CancellationToken cancellationToken = default)
    {
        await LoadAsync(cancellationToken);
        if (!deliver || !_options.IsConfigured)
        {
            return;
        }

        _routes = new RouteTable(_options, _serverName, _isLocalDomain, _time);
        var workers = Enumerable.Range(0, _options.Concurrency).Select(_ => Task.Run(() => WorkAsync(_abort.Token), CancellationToken.None)).ToList();
        workers.Add(Task.Run(() => DispatchAsync(_stopping.Token), CancellationToken.None));
        _running = Task.WhenAll(workers);
        LogStarted(_logger, _entries.Count, Interlocked.Read(ref _bytes), _spool.Directory);
    }

    /// <summary>Stops dispatching; attempts in flight may finish within <paramref name="grace"/>, then are cut (and retried after the next start).</summary>
    public async Task StopAsync(TimeSpan grace, CancellationToken cancellationToken = default)
    {
        if (_stopping.IsCancellationRequested)
        {
            return;
        }

        await _stopping.CancelAsync();
        _work.Writer.TryComplete();
        try
        {
            await _running.WaitAsync(grace, cancellationToken);
        }
        catch (Exception ex) when (ex is TimeoutException or OperationCanceledException)
        {
            await _abort.CancelAsync();
            try
            {
                await _running.WaitAsync(TimeSpan.FromSeconds(10), CancellationToken.None);
            }
            catch (Exception inner) when (inner is TimeoutException or OperationCanceledException)
            {
            }
        }

        if (_routes is not null)
        {
            await _routes.DisposeAsync();
        }
    }

    public async ValueTask DisposeAsync()
    {
        await StopAsync(TimeSpan.FromSeconds(5));
        _stopping.Dispose();
        _abort.Dispose();
    }

    // ---- IMailQueue: the listener's side ----

    public bool HasRoomFor(long size)
    {
        if (_options.SpoolQuotaBytes > 0 && Interlocked.Read(ref _bytes) + size > _options.SpoolQuotaBytes)
        {
            Interlocked.Increment(ref _refused);
            return false;
        }

        if (_options.MinFreeBytes > 0 && FreeSpace() - size < _options.MinFreeBytes)
        {
            Interlocked.Increment(ref _refused);
            return false;
        }

        return true;
    }

    public void Enqueued(SpoolEnvelope envelope)
    {
        var entry = new Entry(envelope, QueueState.Fresh(envelope, _time.GetUtcNow()));
        if (_entries.TryAdd(envelope.Id, entry))
        {
            Interlocked.Add(ref _bytes, envelope.Size);
            Schedule(entry, entry.State.NextAttempt);
        }
    }

    // Free space is a statfs per call: cached for a second, it costs nothing on the MAIL/DATA path.
    private long FreeSpace()
    {
        var now = _time.GetTimestamp();
        if (_time.GetElapsedTime(Interlocked.Read(ref _freeSpaceCheckedAt), now) > TimeSpan.FromSeconds(1) || Interlocked.Read(ref _freeSpaceCheckedAt) == long.MinValue)
        {
            try
            {
                Interlocked.Exchange(ref _freeSpace, new DriveInfo(_spool.Directory).AvailableFreeSpace);
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or ArgumentException)
            {
                Interlocked.Exchange(ref _freeSpace, long.MaxValue);
            }

            Interlocked.Exchange(ref _freeSpaceCheckedAt, now);
        }

        return Interlocked.Read(ref _freeSpace);
    }

    // ---- Loading ----

    private async Task LoadAsync(CancellationToken cancellationToken)
    {
        var directory = _spool.Directory;
        foreach (var temp in Directory.EnumerateFiles(directory, "*.tmp"))
        {
            // Interrupted writes: a message whose envelope was never renamed into place was never
            // acknowledged (no 250), and a state file's temporary is superseded by the file itself.
            MailSpool.TryDelete(temp);
        }

        var now = _time.GetUtcNow();
        foreach (var path in Directory.EnumerateFiles(directory, "*.json"))
        {
            var id = Path.GetFileNameWithoutExtension(path);
            if (_entries.ContainsKey(id))
            {
                continue;
            }

            try
            {
                var envelope = JsonSerializer.Deserialize<SpoolEnvelope>(await File.ReadAllBytesAsync(path, cancellationToken))
                               ?? throw new JsonException("empty envelope");
                if (!File.Exists(_spool.MessagePath(id)))
                {
                    LogMissingMessage(_logger, id);
                    continue;
                }

                var state = File.Exists(StatePath(id))
                    ? JsonSerializer.Deserialize<QueueState>(await File.ReadAllBytesAsync(StatePath(id), cancellationToken)) ?? QueueState.Fresh(envelope, now)
                    : QueueState.Fresh(envelope, now);
                var entry = new Entry(envelope, state);
                if (_entries.TryAdd(id, entry))
                {
                    Interlocked.Add(ref _bytes, envelope.Size);
                    Schedule(entry, state.NextAttempt);
                }
            }
            catch (JsonException ex)
            {
                // Left in place for an operator: never delete what might be mail.
                LogUnreadable(_logger, ex, id);
            }
        }

        // Files of messages whose envelope is gone: a delivery that finished (the envelope is removed
        // first) or a write that never completed. Neither is mail.
        foreach (var path in Directory.EnumerateFiles(directory, "*.eml").Concat(Directory.EnumerateFiles(directory, "*.state")))
        {
            var id = Path.GetFileNameWithoutExtension(path);
            if (!File.Exists(_spool.EnvelopePath(id)))
            {
                MailSpool.TryDelete(path);
            }
        }
    }

    // ---- Scheduling ----

    private void Schedule(Entry entry, DateTimeOffset at)
    {
        lock (_scheduleLock)
        {
            entry.ScheduledAt = at;
            _due.Enqueue(entry, at);
        }

        _wake.Release();
    }

    private async Task DispatchAsync(CancellationToken cancellationToken)
    {
        var ready = new List<Entry>();
        while (!cancellationToken.IsCancellationRequested)
        {
            var now = _time.GetUtcNow();
            DateTimeOffset? next = null;
            lock (_scheduleLock)
            {
                while (_due.TryPeek(out var entry, out var at))
                {
                    if (at > now)
                    {
                        next = at;
                        break;
                    }

                    _due.Dequeue();
                    if (entry.Removed || entry.InFlight || entry.State.Held || entry.ScheduledAt != at)
                    {
                        continue;
                    }

                    entry.InFlight = true;
                    ready.Add(entry);
                }
            }

            foreach (var entry in ready)
            {
                _work.Writer.TryWrite(entry);
            }

            ready.Clear();
            var wait = next is { } n ? n - now : TimeSpan.FromMinutes(1);
            if (wait > TimeSpan.FromMinutes(1))
            {
                wait = TimeSpan.FromMinutes(1);
            }

            try
            {
                using var delay = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
                var timer = Task.Delay(wait, _time, delay.Token);
                var woken = _wake.WaitAsync(delay.Token);
                await Task.WhenAny(timer, woken);
                await delay.CancelAsync();
                // Many wake-ups may be pending (a burst of new mail): one pass serves them all.
                while (_wake.CurrentCount > 0 && _wake.Wait(0, CancellationToken.None))
                {
                }
            }
            catch (OperationCanceledException)
            {
                return;
            }
        }
    }

    private async Task WorkAsync(CancellationToken cancellationToken)
    {
        try
        {
            await foreach (var entry in _work.Reader.ReadAllAsync(cancellationToken))
            {
                try
                {
                    if (_stopping.IsCancellationRequested)
                    {
                        continue; // stopping: what is still waiting here is tried after the next start
                    }

                    await AttemptAsync(entry, cancellationToken);
                }
                catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
                {
                    return;
                }
                catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
                {
                    // The spool itself failed (disk full, permissions): try again later, lose nothing.
                    LogSpoolProblem(_logger, ex, entry.Envelope.Id);
                    entry.State.NextAttempt = _time.GetUtcNow() + _options.MinimalBackoff;
                }
                catch (Exception ex) when (ex is not OperationCanceledException)
                {
                    // A message this code cannot handle must not take a worker down with it: it stays
                    // queued, retried on the backoff schedule, until its lifetime runs out.
                    LogAttemptFailed(_logger, ex, entry.Envelope.Id);
                    entry.State.NextAttempt = _time.GetUtcNow() + Backoff(Math.Max(1, entry.State.Attempts));
                }
                finally
                {
                    entry.InFlight = false;
                    if (!entry.Removed && !_stopping.IsCancellationRequested)
                    {
                        Schedule(entry, entry.State.NextAttempt);
                    }
                }
            }
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
        }
    }

    // ---- One attempt ----

    private async Task AttemptAsync(Entry entry, CancellationToken cancellationToken)
    {
        await entry.Gate.WaitAsync(cancellationToken);
        try
        {
            if (entry.Removed || entry.State.Held)
            {
                return;
            }

            var envelope = entry.Envelope;
            var state = entry.State;
            var id = envelope.Id;
            var now = _time.GetUtcNow();
            var pending = state.Recipients.Where(r => r.Status == RecipientStatus.Pending).ToList();
            var expired = now - envelope.ReceivedAt >= _options.QueueLifetime;
            if (expired)
            {
                foreach (var r in pending)
                {
                    r.Status = RecipientStatus.Failed;
                    r.Reply = string.Create(CultureInfo.InvariantCulture,
                        $"delivery time expired after {state.Attempts} attempts{(r.Reply.Length > 0 ? "; last: " + r.Reply : "")}");
                    r.Dsn = "4.4.7";
                    r.At = now;
                    Interlocked.Increment(ref _expired);
                    Publish(envelope, r.Address, "expired", "", 0, "4.4.7", r.Reply, TimeSpan.Zero, EventOutcome.Reject, state.Attempts);
                }

                LogExpired(_logger, id, pending.Count);
            }
            else
            {
                var message = new OutboundMessage
                {
                    Id = id,
                    Envelope = envelope,
                    Path = _spool.MessagePath(id),
                    Prepend = ReceivedHeader.For(envelope, _serverName, id),
                };
                foreach (var group in pending.GroupBy(r => _routes!.Resolve(r.Address, envelope.Role)))
                {
                    var hop = group.Key;
                    var recipients = group.Select(r => r.Address).ToList();
                    var started = _time.GetTimestamp();
                    IReadOnlyList<RecipientResult> results = hop is null
                        ? [.. recipients.Select(r => RecipientResult.NoReply(r, "4.3.5", "no next hop is configured for " + DomainOf(r), ""))]
                        : await hop.DeliverAsync(message, recipients, cancellationToken);
                    var elapsed = _time.GetElapsedTime(started);
                    var at = _time.GetUtcNow();
                    foreach (var result in results)
                    {
                        var r = group.First(x => string.Equals(x.Address, result.Recipient, StringComparison.OrdinalIgnoreCase));
                        r.Attempts++;
                        r.Code = result.Code;
                        r.Dsn = result.Dsn;
                        r.Reply = result.Text;
                        r.Hop = result.Host;
                        r.At = at;
                        EventOutcome outcome;
                        if (result.Delivered)
                        {
                            r.Status = RecipientStatus.Delivered;
                            outcome = EventOutcome.Ok;
                            Interlocked.Increment(ref hop is DiscardNextHop ? ref _discarded : ref _delivered);
                        }
                        else if (result.Permanent)
                        {
                            r.Status = RecipientStatus.Failed;
                            outcome = EventOutcome.Reject;
                            Interlocked.Increment(ref _bounced);
                        }
                        else
                        {
                            outcome = EventOutcome.TempFail;
                            Interlocked.Increment(ref _deferredRecipients);
                        }

                        if (hop is not DiscardNextHop)
                        {
                            // Discarded demo mail is only counted: its events would add to the activity the
                            // detection model judges the demo population by.
                            Publish(envelope, r.Address, hop?.Protocol ?? "none", (hop?.Name ?? "none") + (result.Host.Length > 0 ? " " + result.Host : ""),
                                result.Code, result.Dsn, result.Text, elapsed, outcome, state.Attempts + 1);
                        }
                    }

                    var delivered = results.Count(x => x.Delivered);
                    if (delivered == results.Count)
                    {
                        // Every recipient's outcome is an event in the store; the log keeps the exceptions.
                        LogDelivered(_logger, id, hop?.Name ?? "none", delivered, (long)elapsed.TotalMilliseconds);
                    }
                    else
                    {
                        LogAttempt(_logger, id, hop?.Name ?? "none", delivered, results.Count(x => x.Permanent),
                            results.Count(x => !x.Delivered && !x.Permanent), (long)elapsed.TotalMilliseconds);
                    }
                    if (!state.Done)
                    {
                        // What this hop confirmed is on disk before the next hop is tried.
                        await SaveStateAsync(id, state, cancellationToken);
                    }
                }
            }

            await NotifyFailuresAsync(entry, now, expired, cancellationToken);
            if (state.Done)
            {
                Remove(entry);
                return;
            }

            state.Attempts++;
            state.NextAttempt = _time.GetUtcNow() + Backoff(state.Attempts);
            state.LastError = state.Recipients.FirstOrDefault(r => r.Status == RecipientStatus.Pending)?.Reply ?? "";
            Interlocked.Increment(ref _deferrals);
            await SaveStateAsync(id, state, cancellationToken);
            LogDeferred(_logger, id, state.Attempts, state.NextAttempt, state.LastError);
        }
        finally
        {
            entry.Gate.Release();
        }
    }

    /// <summary>Postfix's schedule: the minimal backoff, doubled after each further failure, capped at the maximal.</summary>
    public TimeSpan Backoff(int attempts)
    {
        var factor = Math.Pow(2, Math.Clamp(attempts - 1, 0, 40));
        var ticks = Math.Min(_options.MaximalBackoff.Ticks, _options.MinimalBackoff.Ticks * factor);
        return TimeSpan.FromTicks((long)ticks);
    }

    /// <summary>One DSN for the recipients that failed since the last one, queued durably before they are marked notified.</summary>
    private async Task NotifyFailuresAsync(Entry entry, DateTimeOffset now, bool expired, CancellationToken cancellationToken)
    {
        var envelope = entry.Envelope;
        var failed = entry.State.Recipients.Where(r => r.Status == RecipientStatus.Failed && !r.Notified).ToList();
        if (failed.Count == 0)
        {
            return;
        }

        if (envelope.Sender.Length == 0 || envelope.Role == "dsn")
        {
            // Never a bounce to the null sender (RFC 5321 6.1, 3464): that is how mail loops start.
            LogBounceDropped(_logger, envelope.Id, failed.Count);
        }
        else
        {
            var id = _spool.NewId(now, 0) + "-dsn";
            var bytes = DsnBuilder.Build(envelope, failed, _spool.MessagePath(envelope.Id), _serverName, now, expired);
            var length = bytes.Length;
            while (length >= 2 && bytes[length - 2] == '\r' && bytes[length - 1] == '\n')
            {
                length -= 2;
            }

            var dsn = new SpoolEnvelope(id, "", [envelope.Sender], "", 0, "", "dsn", "", false, now, "0", _node, length + 2);
            await _spool.WriteAsync(dsn, new ReadOnlySequence<byte>(bytes, 0, length), cancellationToken);
            Interlocked.Increment(ref _dsnQueued);
            LogDsn(_logger, envelope.Id, id, envelope.Sender, failed.Count);
            Enqueued(dsn);
        }

        foreach (var r in failed)
        {
            r.Notified = true;
        }

        if (!entry.State.Done)
        {
            await SaveStateAsync(envelope.Id, entry.State, cancellationToken);
        }
    }

    private void Remove(Entry entry)
    {
        var id = entry.Envelope.Id;
        entry.Removed = true;
        // The envelope first: without it, what remains is not mail (see LoadAsync). Both files go back
        // to the spool's pool (renamed, emptied) for the next message rather than being deleted.
        var pool = _spool.Pool;
        pool.Release(_spool.EnvelopePath(id));
        pool.Release(_spool.MessagePath(id));
        MailSpool.TryDelete(StatePath(id));
        if (_entries.TryRemove(id, out _))
        {
            Interlocked.Add(ref _bytes, -entry.Envelope.Size);
        }
    }

    private async Task SaveStateAsync(string id, QueueState state, CancellationToken cancellationToken)
    {
        await MailSpool.WriteDurablyAsync(StatePath(id), stream => JsonSerializer.SerializeAsync(stream, state, QueueState.Json, cancellationToken), cancellationToken, overwrite: true);
        await _spool.Sync.SyncAsync();
    }

    private string StatePath(string id) => Path.Combine(_spool.Directory, id + ".state");

    private void Publish(SpoolEnvelope envelope, string recipient, string mechanism, string hop, int code, string dsn, string text, TimeSpan elapsed,
        EventOutcome outcome, int attempt)
    {
        _ = ulong.TryParse(envelope.SessionId, NumberStyles.HexNumber, CultureInfo.InvariantCulture, out var session);
        _events.Publish(new SmtpEvent
        {
            Timestamp = _time.GetUtcNow(),
            Node = _node,
            Role = envelope.Role == "mx" ? ListenerRole.Mx : ListenerRole.Submission,
            SessionId = session,
            Kind = EventKind.Delivery,
            ClientIp = IPAddress.TryParse(envelope.ClientIp, out var ip) ? ip : IPAddress.Any,
            ClientPort = (ushort)envelope.ClientPort,
            User = envelope.User,
            Mechanism = mechanism,
            Outcome = outcome,
            ReplyCode = (ushort)Math.Clamp(code, 0, 999),
            Status = dsn,
            Sender = envelope.Sender,
            Recipient = recipient,
            RecipientDomain = DomainOf(recipient),
            Size = (ulong)Math.Max(0, envelope.Size),
            DurationMs = (uint)Math.Clamp(elapsed.TotalMilliseconds, 0, uint.MaxValue),
            Detail = string.Create(CultureInfo.InvariantCulture, $"queue {envelope.Id} attempt {attempt} via {hop}: {text}"),
        });
    }

    private static string DomainOf(string address)
    {
        var at = address.LastIndexOf('@');
        return at >= 0 ? address[(at + 1)..].ToLowerInvariant() : "";
    }

    // ---- Operator verbs ----

    public IReadOnlyList<QueuedMessage> List() =>
        [.. _entries.Values.Select(View).OrderBy(m => m.ReceivedAt).ThenBy(m => m.Id, StringComparer.Ordinal)];

    public QueuedMessage? Show(string id) => _entries.TryGetValue(id, out var entry) ? View(entry) : null;

    /// <summary>Every deferred message is tried now (postqueue -f). Returns how many.</summary>
    public async Task<int> FlushAsync(CancellationToken cancellationToken)
    {
        var n = 0;
        foreach (var entry in _entries.Values.Where(e => !e.State.Held))
        {
            if (await RetryAsync(entry, cancellationToken))
            {
                n++;
            }
        }

        return n;
    }

    /// <summary>One message is tried now (postqueue -i). False: no such message, or it is held.</summary>
    public async Task<bool> RetryAsync(string id, CancellationToken cancellationToken) =>
        _entries.TryGetValue(id, out var entry) && !entry.State.Held && await RetryAsync(entry, cancellationToken);

    private async Task<bool> RetryAsync(Entry entry, CancellationToken cancellationToken)
    {
        entry.State.NextAttempt = _time.GetUtcNow();
        if (!Delivering)
        {
            // No server delivers now: the next start takes the recorded time.
            await WithGateAsync(entry, () => SaveStateAsync(entry.Envelope.Id, entry.State, cancellationToken), cancellationToken);
        }
        else if (!entry.InFlight)
        {
            Schedule(entry, entry.State.NextAttempt);
        }

        return true;
    }

    /// <summary>Removes a message without a DSN (postsuper -d). False: no such message.</summary>
    public async Task<bool> DeleteAsync(string id, CancellationToken cancellationToken)
    {
        if (!_entries.TryGetValue(id, out var entry))
        {
            return false;
        }

        await WithGateAsync(entry, () =>
        {
            Remove(entry);
            return Task.CompletedTask;
        }, cancellationToken);
        LogOperator(_logger, "deleted", id);
        return true;
    }

    /// <summary>Keeps a message from delivery until released (postsuper -h). False: no such message.</summary>
    public Task<bool> HoldAsync(string id, CancellationToken cancellationToken) => SetHeldAsync(id, true, cancellationToken);

    /// <summary>Releases a held message and tries it now (postsuper -H). False: no such message.</summary>
    public Task<bool> ReleaseAsync(string id, CancellationToken cancellationToken) => SetHeldAsync(id, false, cancellationToken);

    private async Task<bool> SetHeldAsync(string id, bool held, CancellationToken cancellationToken)
    {
        if (!_entries.TryGetValue(id, out var entry))
        {
            return false;
        }

        await WithGateAsync(entry, async () =>
        {
            if (entry.Removed)
            {
                return;
            }

            entry.State.Held = held;
            if (!held)
            {
                entry.State.NextAttempt = _time.GetUtcNow();
            }

            await SaveStateAsync(id, entry.State, cancellationToken);
        }, cancellationToken);
        if (!held && Delivering && !entry.Removed)
        {
            Schedule(entry, entry.State.NextAttempt);
        }

        LogOperator(_logger, held ? "held" : "released", id);
        return !entry.Removed;
    }

    private static async Task WithGateAsync(Entry entry, Func<Task> action, CancellationToken cancellationToken)
    {
        await entry.Gate.WaitAsync(cancellationToken);
        try
        {
            await action();
        }
        finally
        {
            entry.Gate.Release();
        }
    }

    public DeliveryQueueStats Stats()
    {
        var now = _time.GetUtcNow();
        int messages = 0, active = 0, deferred = 0, held = 0;
        var oldest = TimeSpan.Zero;
        foreach (var entry in _entries.Values)
        {
            messages++;
            if (entry.State.Held)
            {
                held++;
            }
            else if (entry.State.Attempts > 0 && !entry.InFlight)
            {
                deferred++;
            }
            else
            {
                active++;
            }

            var age = now - entry.Envelope.ReceivedAt;
            if (age > oldest)
            {
                oldest = age;
            }
        }

        return new DeliveryQueueStats(messages, active, deferred, held, Interlocked.Read(ref _bytes), oldest,
            Interlocked.Read(ref _delivered), Interlocked.Read(ref _bounced), Interlocked.Read(ref _deferredRecipients), Interlocked.Read(ref _expired),
            Interlocked.Read(ref _discarded), Interlocked.Read(ref _deferrals), Interlocked.Read(ref _dsnQueued), Interlocked.Read(ref _refused));
    }

    private static QueuedMessage View(Entry entry)
    {
        var s = entry.State;
        var e = entry.Envelope;
        return new QueuedMessage(e.Id, e.Sender, e.User, e.Role, e.ReceivedAt, e.Size, s.Held, entry.InFlight, s.Attempts, s.NextAttempt, s.LastError,
            [.. s.Recipients.Select(r => new RecipientView(r.Address, r.Status.ToString().ToLowerInvariant(), r.Attempts, r.Code, r.Dsn, r.Reply, r.Hop, r.At))]);
    }

    private sealed class Entry
    {
        public Entry(SpoolEnvelope envelope, QueueState state)
        {
            Envelope = envelope;
            State = state;
        }

        public SpoolEnvelope Envelope { get; }

        /// <summary>Mutated under <see cref="Gate"/> (reads for listing may see a state mid-update, which is fine for display).</summary>
        public QueueState State { get; }

        /// <summary>One attempt or operator action at a time.</summary>
        public SemaphoreSlim Gate { get; } = new(1, 1);

        public volatile bool InFlight;

        public volatile bool Removed;

        public DateTimeOffset ScheduledAt;
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Delivery queue started: {Messages} messages ({Bytes} bytes) in {SpoolDirectory}")]
    private static partial void LogStarted(ILogger logger, int messages, long bytes, string spoolDirectory);

    [LoggerMessage(Level = LogLevel.Debug, Message = "{QueueId}: via {Hop}: {Delivered} delivered in {ElapsedMs} ms")]
    private static partial void LogDelivered(ILogger logger, string queueId, string hop, int delivered, long elapsedMs);

    [LoggerMessage(Level = LogLevel.Information, Message = "{QueueId}: via {Hop}: {Delivered} delivered, {Failed} failed, {Deferred} deferred in {ElapsedMs} ms")]
    private static partial void LogAttempt(ILogger logger, string queueId, string hop, int delivered, int failed, int deferred, long elapsedMs);

    [LoggerMessage(Level = LogLevel.Information, Message = "{QueueId}: deferred (attempt {Attempts}), next attempt at {NextAttempt:o}: {Reason}")]
    private static partial void LogDeferred(ILogger logger, string queueId, int attempts, DateTimeOffset nextAttempt, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "{QueueId}: queue lifetime reached; {Recipients} recipients failed")]
    private static partial void LogExpired(ILogger logger, string queueId, int recipients);

    [LoggerMessage(Level = LogLevel.Information, Message = "{QueueId}: DSN {DsnId} queued to {Sender} for {Recipients} failed recipients")]
    private static partial void LogDsn(ILogger logger, string queueId, string dsnId, string sender, int recipients);

    [LoggerMessage(Level = LogLevel.Warning, Message = "{QueueId}: {Recipients} recipients failed; no DSN (null sender or a DSN itself)")]
    private static partial void LogBounceDropped(ILogger logger, string queueId, int recipients);

    [LoggerMessage(Level = LogLevel.Warning, Message = "{QueueId}: the envelope has no message file; left in place")]
    private static partial void LogMissingMessage(ILogger logger, string queueId);

    [LoggerMessage(Level = LogLevel.Error, Message = "{QueueId}: unreadable queue files; left in place for an operator")]
    private static partial void LogUnreadable(ILogger logger, Exception exception, string queueId);

    [LoggerMessage(Level = LogLevel.Error, Message = "{QueueId}: the spool could not be updated; the message stays queued")]
    private static partial void LogSpoolProblem(ILogger logger, Exception exception, string queueId);

    [LoggerMessage(Level = LogLevel.Error, Message = "{QueueId}: the delivery attempt failed unexpectedly; the message stays queued")]
    private static partial void LogAttemptFailed(ILogger logger, Exception exception, string queueId);

    [LoggerMessage(Level = LogLevel.Information, Message = "{QueueId}: {Action} by the operator")]
    private static partial void LogOperator(ILogger logger, string action, string queueId);
}
