using System.Buffers;
using System.Globalization;

namespace Analytics.Events;

/// <summary>
/// The on-disk queue of batches the store did not take. Each batch is one file of event frames
/// (<see cref="EventFrame"/>), written to a temp name, fsynced, renamed and the directory fsynced, so
/// a crash leaves either the whole batch or nothing. File names carry an increasing sequence (replay
/// order), the event count and the batch's deduplication token (the same token the failed insert
/// used, so a batch that did land before the failure is not doubled).
/// Producers spill here when memory is full: frames of up to 4,096 events appended to an open
/// <c>.partial</c> segment, sealed into a regular batch by the sink's loop. After a crash, recovery
/// keeps every complete frame of a segment and quarantines (and counts) only a torn tail. The batch
/// being collected may have a journal (<see cref="Journal"/>), recovered the same way.
/// Nothing here throws into a producer: a spill that cannot be written is refused, not raised.
/// </summary>
internal sealed class EventSpool : IDisposable
{
    public const string Extension = ".frames";

    // Spool files of the versions before 0030: one Native events block each, replayed into events only.
    public const string LegacyExtension = ".native";

    // The journal of the batch being collected (see <see cref="Journal"/>, <see cref="JournalCodec"/>).
    public const string JournalExtension = ".journal";

    // Spilled events are grouped into frames of this many before they are written: one-row blocks
    // would cost ClickHouse far more to parse on replay. At most this many wait in memory.
    private const int SpillFrameSize = 4096;

    private readonly string _directory;
    private readonly string _quarantine;
    private readonly Lock _spillLock = new();
    private long _sequence;

    // Spill state: owned by producers under _spillLock (the loop seals under it too).
    private FileStream? _spill;
    private long _spillSequence;
    private int _segmentEvents;
    private long _spillGoodLength;
    private (string From, string To)? _sealing;
    private readonly ArrayBufferWriter<byte> _spillBuffer = new(1 << 16);
    private readonly EventBatch _spillFrame = new(SpillFrameSize);

    // Batches on disk, kept in memory: the sink asks before every batch, and listing the directory
    // each time would put I/O on every insert. Only this class adds or removes spool files.
    private int _count;
    private long _quarantinedEvents;
    private int _quarantinedFiles;
    private long _recoveredEvents;

    public EventSpool(string directory)
    {
        _directory = Path.GetFullPath(directory);
        _quarantine = Path.Combine(_directory, "quarantine");
        Directory.CreateDirectory(_directory);

        // Never reuse a sequence: not one that is pending, left open, or already set aside.
        _sequence = Sequences(_directory).Concat(Directory.Exists(_quarantine) ? Sequences(_quarantine) : []).DefaultIfEmpty(0).Max();
        Recover();
        _count = Pending().Count;
    }

    public string SpoolDirectory => _directory;

    internal sealed record SpooledBatch(string Path, long Sequence, int Count, string Token)
    {
        public bool Legacy => Path.EndsWith(LegacyExtension, StringComparison.Ordinal);
    }

    public int Count => Volatile.Read(ref _count);

    /// <summary>Events set aside since this spool was opened (unreadable batches, torn spill tails).</summary>
    public long QuarantinedEvents => Interlocked.Read(ref _quarantinedEvents);

    public int QuarantinedFiles => Volatile.Read(ref _quarantinedFiles);

    /// <summary>Events kept from <c>.partial</c> segments that a crash left open.</summary>
    public long RecoveredEvents => Interlocked.Read(ref _recoveredEvents);

    public long NextSequence() => Interlocked.Increment(ref _sequence);

    /// <summary>Writes a batch durably. Throws (and leaves nothing behind) when the disk refuses it.</summary>
    public SpooledBatch Write(long sequence, string token, int count, ReadOnlySpan<byte> frames)
    {
        var final = Path.Combine(_directory, FileName(sequence, count, token));
        var temp = final + ".tmp";
        try
        {
            using (var stream = new FileStream(temp, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 16))
            {
                stream.Write(frames);
                stream.Flush(flushToDisk: true);
            }

            Durable.Move(temp, final);
        }
        catch
        {
            TryDelete(temp);
            throw;
        }

        Interlocked.Increment(ref _count);
        return new SpooledBatch(final, sequence, count, token);
    }

    /// <summary>
    /// Opens the journal of the batch that will be shipped with <paramref name="sequence"/> and
    /// <paramref name="token"/>. Throws when the disk refuses it.
    /// </summary>
    public Journal OpenJournal(long sequence, string token) =>
        new(Path.Combine(_directory, string.Create(CultureInfo.InvariantCulture, $"{sequence:D16}_{token}{JournalExtension}")));

    /// <summary>
    /// The events of a batch still being collected, appended as frames when a caller needs them to
    /// outlive the process (an SMTP reply that says the message was taken). Written through to the
    /// kernel (no buffer of ours), not fsynced: a SIGKILL, a crash or an OOM kill keeps them, a power
    /// cut may not (the mail spool fsyncs the message itself). Deleted once the batch is in the store or
    /// spooled; after a crash, recovery makes a journal a spooled batch of its intact events (one frame)
    /// under the batch's own token, so the copy of a batch that did reach the store is dropped by ClickHouse.
    /// </summary>
    internal sealed class Journal(string path) : IDisposable
    {
        // Unbuffered: each frame is one write(2), and a failed one leaves no bytes behind in a buffer.
        private readonly FileStream _stream = new(path, FileMode.CreateNew, FileAccess.Write, FileShare.Read, bufferSize: 0);
        private long _goodLength;

        public string Path { get; } = path;

        /// <summary>Appends one group of events (<see cref="JournalCodec"/>). False (the journal cut back to its last whole group) when the disk refuses it.</summary>
        public bool Append(ReadOnlySpan<byte> frame)
        {
            try
            {
                _stream.Write(frame);
                _goodLength = _stream.Position;
                return true;
            }
            catch (IOException)
            {
                try
                {
                    _stream.Position = _goodLength;
                    _stream.SetLength(_goodLength);
                }
                catch (IOException)
                {
                    // Recovery keeps the whole frames before a torn one.
                }

                return false;
            }
        }

        /// <summary>The batch is in the store or spooled: the journal has nothing left to keep.</summary>
        public void Delete()
        {
            Dispose();
            try
            {
                File.Delete(Path);
            }
            catch (IOException)
            {
                // Left behind, it is recovered at the next start and dropped by its token.
            }
        }

        public void Dispose()
        {
            try
            {
                _stream.Dispose();
            }
            catch (IOException)
            {
            }
        }
    }

    /// <summary>Writes the spill frame being filled, so the events in it outlive the process. Never throws.</summary>
    public void WriteSpillFrame()
    {
        lock (_spillLock)
        {
            TryWriteSpillFrame();
        }
    }

    /// <summary>
    /// Appends one event to the current spill segment (producers, when memory is full). False when the
    /// disk refuses it: the event was not taken. Never throws.
    /// </summary>
    public bool Spill(SmtpEvent smtpEvent)
    {
        lock (_spillLock)
        {
            // A full frame that could not be written before is written first; while that fails,
            // nothing more is taken (memory stays bounded).
            if (_spillFrame.Count >= SpillFrameSize && !TryWriteSpillFrame())
            {
                return false;
            }

            _spillFrame.Add(smtpEvent);
            if (_spillFrame.Count >= SpillFrameSize)
            {
                // Taken either way: written now, or kept in memory and written by the next try.
                TryWriteSpillFrame();
            }

            return true;
        }
    }

    private bool OpenSegment()
    {
        if (_spill is not null)
        {
            return true;
        }

        try
        {
            var sequence = NextSequence();

            // Unbuffered: whole frames are written, and a failed write leaves no bytes behind in a buffer.
            _spill = new FileStream(Path.Combine(_directory, sequence.ToString("D16", CultureInfo.InvariantCulture) + ".partial"),
                FileMode.CreateNew, FileAccess.Write, FileShare.Read, bufferSize: 0);
            _spillSequence = sequence;
            _segmentEvents = 0;
            _spillGoodLength = 0;
            return true;
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return false;
        }
    }

    private bool TryWriteSpillFrame()
    {
        if (_spillFrame.Count == 0)
        {
            return true;
        }

        if (!OpenSegment())
        {
            return false;
        }

        _spillBuffer.ResetWrittenCount();
        _spillFrame.WriteTo(_spillBuffer);
        try
        {
            _spill!.Write(_spillBuffer.WrittenSpan);
        }
        catch (IOException)
        {
            // A short write leaves a torn frame: the next frame goes where it began, and the segment is
            // cut back to its last whole frame (now, or when it is sealed).
            try
            {
                _spill!.Position = _spillGoodLength;
                _spill.SetLength(_spillGoodLength);
            }
            catch (IOException)
            {
            }

            return false;
        }

        _spillGoodLength = _spill.Position;
        _segmentEvents += _spillFrame.Count;
        _spillFrame.Reset();
        return true;
    }

    /// <summary>
    /// Closes the current spill segment, if any, and makes it a regular spooled batch of the frames it
    /// holds. A frame the disk refuses stays in memory for the next segment: the segment is sealed
    /// without it, so a full disk cannot keep what is already on it from being replayed (which is what
    /// frees the disk). True when nothing spilled is left outside a sealed batch.
    /// </summary>
    public bool SealSpill(string token)
    {
        lock (_spillLock)
        {
            try
            {
                if (!FinishSeal())
                {
                    return false;
                }

                TryWriteSpillFrame();
                if (_spill is null)
                {
                    return _spillFrame.Count == 0;
                }

                var path = _spill.Name;
                if (_segmentEvents == 0)
                {
                    _spill.Dispose();
                    _spill = null;
                    File.Delete(path);
                    return _spillFrame.Count == 0;
                }

                _spill.SetLength(_spillGoodLength);
                _spill.Flush(flushToDisk: true);
                _spill.Dispose();
                _spill = null;
                _sealing = (path, Path.Combine(_directory, FileName(_spillSequence, _segmentEvents, token)));
                return FinishSeal() && _spillFrame.Count == 0;
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
                return false;
            }
        }
    }

    // The rename of a closed segment, retried until the disk takes it: until then the segment counts
    // as open, so a flush waits for it and nothing is left behind unreplayed.
    private bool FinishSeal()
    {
        if (_sealing is not { } sealing)
        {
            return true;
        }

        try
        {
            if (File.Exists(sealing.From))
            {
                File.Move(sealing.From, sealing.To, overwrite: false);
            }

            Durable.FsyncDirectory(_directory);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return false;
        }

        _sealing = null;
        Interlocked.Increment(ref _count);
        return true;
    }

    public bool HasOpenSpill
    {
        get
        {
            lock (_spillLock)
            {
                return _spill is not null || _sealing is not null || _spillFrame.Count > 0;
            }
        }
    }

    /// <summary>
    /// Segments a crash left open: each becomes a regular batch of its complete frames; a torn tail
    /// (and a segment with no complete frame) goes to quarantine, counted. Temp files of batch writes
    /// are kept when whole (the fsync came before the crash) and dropped when not (the batch was still
    /// in memory, never reported as spooled).
    /// </summary>
    private void Recover()
    {
        foreach (var partial in Directory.EnumerateFiles(_directory, "*.partial").Order(StringComparer.Ordinal).ToList())
        {
            if (!long.TryParse(Path.GetFileNameWithoutExtension(partial), NumberStyles.None, CultureInfo.InvariantCulture, out var sequence))
            {
                QuarantineFile(partial, 0);
                continue;
            }

            // The token is made from the segment itself, so a recovery interrupted and run again names
            // the same batch the same way and ClickHouse drops a second copy.
            RecoverFrames(partial, sequence, null);
        }

        foreach (var temp in Directory.EnumerateFiles(_directory, "*" + Extension + ".tmp").ToList())
        {
            var data = File.ReadAllBytes(temp);
            EventFrame.Read(data, out var valid);
            if (data.Length > 0 && valid == data.Length)
            {
                Durable.Move(temp, temp[..^4]);
            }
            else
            {
                File.Delete(temp);
            }
        }

        // Journals of batches a crash cut short: the batch's complete frames under the batch's token (a
        // batch that reached the store before the crash is dropped by it), unless the whole batch was
        // spooled already.
        var spooled = Pending().Select(p => p.Sequence).ToHashSet();
        foreach (var journal in Directory.EnumerateFiles(_directory, "*" + JournalExtension).Order(StringComparer.Ordinal).ToList())
        {
            var parts = Path.GetFileNameWithoutExtension(journal).Split('_', 2);
            if (parts.Length != 2 || parts[1].Length == 0 || !long.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out var sequence))
            {
                QuarantineFile(journal, 0);
                continue;
            }

            if (spooled.Contains(sequence))
            {
                File.Delete(journal);
                continue;
            }

            RecoverJournal(journal, sequence, parts[1]);
        }
    }

    // A journal becomes the spooled batch it would have been: its intact events as one frame, under the
    // batch's token. A torn tail is quarantined, counted.
    private void RecoverJournal(string path, long sequence, string token)
    {
        var data = File.ReadAllBytes(path);
        var events = JournalCodec.Read(data, out var valid);
        if (valid < data.Length)
        {
            var tail = data.AsSpan(valid);
            WriteQuarantine(Path.GetFileName(path) + ".tail", tail, JournalCodec.ClaimedCount(tail));
        }

        if (events.Count > 0)
        {
            var batch = new EventBatch(events.Count);
            foreach (var e in events)
            {
                batch.Add(e);
            }

            Write(sequence, token, events.Count, batch.ToArray());
            Interlocked.Add(ref _recoveredEvents, events.Count);
        }

        File.Delete(path);
        Durable.FsyncDirectory(_directory);
    }

    // Makes a file a crash left open a spooled batch of its complete frames; a torn tail is quarantined.
    private void RecoverFrames(string path, long sequence, string? token)
    {
        var data = File.ReadAllBytes(path);
        var frames = EventFrame.Read(data, out var valid);
        if (valid < data.Length)
        {
            var tail = data.AsSpan(valid);
            WriteQuarantine(Path.GetFileName(path) + ".tail", tail, EventFrame.ClaimedCount(tail));
        }

        if (frames.Count == 0)
        {
            File.Delete(path);
            return;
        }

        var events = frames.Sum(f => f.Count);
        using (var stream = new FileStream(path, FileMode.Open, FileAccess.Write))
        {
            stream.SetLength(valid);
            stream.Flush(flushToDisk: true);
        }

        token ??= string.Create(CultureInfo.InvariantCulture, $"rc-{sequence}-{valid}");
        Durable.Move(path, Path.Combine(_directory, FileName(sequence, events, token)));
        Interlocked.Add(ref _recoveredEvents, events);
    }

    /// <summary>Spooled batches in replay order.</summary>
    public List<SpooledBatch> Pending()
    {
        var list = new List<SpooledBatch>();
        foreach (var path in Directory.EnumerateFiles(_directory))
        {
            if (!path.EndsWith(Extension, StringComparison.Ordinal) && !path.EndsWith(LegacyExtension, StringComparison.Ordinal))
            {
                continue;
            }

            var parts = Path.GetFileNameWithoutExtension(path).Split('_', 3);
            if (parts.Length == 3
                && long.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out var sequence)
                && int.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out var count))
            {
                list.Add(new SpooledBatch(path, sequence, count, parts[2]));
            }
        }

        list.Sort((a, b) => a.Sequence.CompareTo(b.Sequence));
        return list;
    }

    public void Remove(SpooledBatch batch)
    {
        File.Delete(batch.Path);
        Interlocked.Decrement(ref _count);
    }

    /// <summary>Moves a batch the store refuses as data (not as an outage) aside, still on disk.</summary>
    public string Quarantine(SpooledBatch batch)
    {
        var target = QuarantineFile(batch.Path, batch.Count);
        Interlocked.Decrement(ref _count);
        return target;
    }

    private string QuarantineFile(string path, int events)
    {
        Directory.CreateDirectory(_quarantine);
        var target = Unique(Path.Combine(_quarantine, Path.GetFileName(path)));
        Durable.Move(path, target);
        Counted(events);
        return target;
    }

    private void WriteQuarantine(string name, ReadOnlySpan<byte> data, int events)
    {
        Directory.CreateDirectory(_quarantine);
        var target = Unique(Path.Combine(_quarantine, name));
        using (var stream = new FileStream(target, FileMode.CreateNew, FileAccess.Write))
        {
            stream.Write(data);
            stream.Flush(flushToDisk: true);
        }

        Durable.FsyncDirectory(_quarantine);
        Counted(events);
    }

    private void Counted(int events)
    {
        Interlocked.Add(ref _quarantinedEvents, events);
        Interlocked.Increment(ref _quarantinedFiles);
    }

    // Quarantine never overwrites: a second file of the same name gets a numbered suffix.
    private static string Unique(string path)
    {
        var candidate = path;
        for (var n = 1; File.Exists(candidate); n++)
        {
            candidate = path + "." + n.ToString(CultureInfo.InvariantCulture);
        }

        return candidate;
    }

    private static IEnumerable<long> Sequences(string directory)
    {
        foreach (var path in Directory.EnumerateFiles(directory))
        {
            var name = Path.GetFileName(path);
            var end = 0;
            while (end < name.Length && char.IsAsciiDigit(name[end]))
            {
                end++;
            }

            if (end > 0 && long.TryParse(name.AsSpan(0, end), NumberStyles.None, CultureInfo.InvariantCulture, out var sequence))
            {
                yield return sequence;
            }
        }
    }

    private static string FileName(long sequence, int count, string token) =>
        string.Create(CultureInfo.InvariantCulture, $"{sequence:D16}_{count}_{token}{Extension}");

    private static void TryDelete(string path)
    {
        try
        {
            File.Delete(path);
        }
        catch (IOException)
        {
        }
    }

    public void Dispose()
    {
        lock (_spillLock)
        {
            try
            {
                _spill?.Dispose();
            }
            catch (IOException)
            {
                // The disk refused the last buffered bytes: recovery keeps the frames before them.
            }

            _spill = null;
        }
    }
}
