using System.Buffers;
using System.Globalization;

namespace Analytics.Events;

/// <summary>
/// The on-disk queue of batches the store did not take. Each batch is one file, written to a temp
/// name, fsynced and renamed, so a crash leaves either the whole batch or nothing. File names carry
/// an increasing sequence (replay order), the row count and the batch's deduplication token (the
/// same token the failed insert used, so a batch that did land before the failure is not doubled).
/// </summary>
internal sealed class EventSpool : IDisposable
{
    // Each file holds Native blocks (one per batch, or one per event for a spill segment).
    private const string Extension = ".native";
    private readonly string _directory;
    private readonly string _quarantine;
    private readonly Lock _spillLock = new();
    private long _sequence;

    // Spill state: owned by producers under _spillLock.
    private FileStream? _spill;
    private long _spillSequence;
    private int _spillCount;
    private readonly ArrayBufferWriter<byte> _spillBuffer = new(1 << 16);
    private readonly EventBlockEncoder _spillBlock = new(SpillBlockSize);

    // Spilled events are grouped into blocks of this many before they are written: one-row blocks
    // would cost ClickHouse far more to parse on replay. At most this many wait in memory.
    private const int SpillBlockSize = 4096;

    public EventSpool(string directory)
    {
        _directory = Path.GetFullPath(directory);
        _quarantine = Path.Combine(_directory, "quarantine");
        Directory.CreateDirectory(_directory);
        foreach (var partial in Directory.EnumerateFiles(_directory, "*.partial"))
        {
            // A spill segment that a crash left open: its complete rows are still good to replay,
            // but a torn last row is not; keep it aside for an operator rather than guess.
            Directory.CreateDirectory(_quarantine);
            File.Move(partial, Path.Combine(_quarantine, Path.GetFileName(partial)), overwrite: true);
        }

        var pending = Pending();
        _sequence = pending.Select(f => f.Sequence).DefaultIfEmpty(0).Max();
        _count = pending.Count;
    }

    public string SpoolDirectory => _directory;

    internal sealed record SpooledBatch(string Path, long Sequence, int Count, string Token);

    // Batches on disk, kept in memory: the sink asks before every batch, and listing the directory
    // each time would put I/O on every insert. Only this class adds or removes spool files.
    private int _count;

    public int Count => Volatile.Read(ref _count);

    public long NextSequence() => Interlocked.Increment(ref _sequence);

    /// <summary>Writes a batch durably. Returns the spooled batch.</summary>
    public SpooledBatch Write(long sequence, string token, int count, ReadOnlySpan<byte> rows)
    {
        var name = FileName(sequence, count, token);
        var final = Path.Combine(_directory, name);
        var temp = final + ".tmp";
        using (var stream = new FileStream(temp, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 16))
        {
            stream.Write(rows);
            stream.Flush(flushToDisk: true);
        }

        File.Move(temp, final, overwrite: true);
        Interlocked.Increment(ref _count);
        return new SpooledBatch(final, sequence, count, token);
    }

    /// <summary>Appends one event to the current spill segment (producers, when memory is full).</summary>
    public void Spill(SmtpEvent smtpEvent)
    {
        lock (_spillLock)
        {
            if (_spill is null)
            {
                _spillSequence = NextSequence();
                _spill = new FileStream(Path.Combine(_directory, _spillSequence.ToString("D16", CultureInfo.InvariantCulture) + ".partial"),
                    FileMode.Create, FileAccess.Write, FileShare.None, 1 << 16);
                _spillCount = 0;
            }

            _spillBlock.Add(smtpEvent);
            _spillCount++;
            if (_spillBlock.Count >= SpillBlockSize)
            {
                WriteSpillBlock();
            }
        }
    }

    private void WriteSpillBlock()
    {
        if (_spillBlock.Count == 0)
        {
            return;
        }

        _spillBuffer.ResetWrittenCount();
        _spillBlock.WriteTo(_spillBuffer);
        _spill!.Write(_spillBuffer.WrittenSpan);
        _spillBlock.Reset();
    }

    /// <summary>Closes the current spill segment, if any, and makes it a regular spooled batch.</summary>
    public void SealSpill(string token)
    {
        lock (_spillLock)
        {
            if (_spill is null)
            {
                return;
            }

            var path = _spill.Name;
            WriteSpillBlock();
            _spill.Flush(flushToDisk: true);
            _spill.Dispose();
            _spill = null;
            File.Move(path, Path.Combine(_directory, FileName(_spillSequence, _spillCount, token)), overwrite: true);
            Interlocked.Increment(ref _count);
        }
    }

    public bool HasOpenSpill
    {
        get
        {
            lock (_spillLock)
            {
                return _spill is not null;
            }
        }
    }

    /// <summary>Spooled batches in replay order.</summary>
    public List<SpooledBatch> Pending()
    {
        var list = new List<SpooledBatch>();
        foreach (var path in Directory.EnumerateFiles(_directory, "*" + Extension))
        {
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
        Directory.CreateDirectory(_quarantine);
        var target = Path.Combine(_quarantine, Path.GetFileName(batch.Path));
        File.Move(batch.Path, target, overwrite: true);
        Interlocked.Decrement(ref _count);
        return target;
    }

    private static string FileName(long sequence, int count, string token) =>
        string.Create(CultureInfo.InvariantCulture, $"{sequence:D16}_{count}_{token}{Extension}");

    public void Dispose()
    {
        lock (_spillLock)
        {
            _spill?.Dispose();
        }
    }
}
