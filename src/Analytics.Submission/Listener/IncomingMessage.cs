using System.Buffers;

namespace Analytics.Submission.Listener;

/// <summary>
/// A message being received (the DATA phase), written to a temporary file in the spool as it
/// arrives instead of being held in memory: the reader feeds it the raw bytes, it removes the
/// dot-stuffing and finds the end of data (RFC 5321 §4.5.2: a line that is a lone "." after CRLF;
/// a bare LF never ends or starts a line, so "\n.\n" cannot smuggle a second message), and it counts
/// every byte it holds against the listener's <see cref="DataBudget"/>. The message store renames the
/// file into the spool on success; every other ending deletes it (<see cref="Discard"/>).
/// Used by one session's reader flow only.
/// </summary>
internal sealed class IncomingMessage
{
    private enum Scan
    {
        LineStart,
        Text,
        Cr,
        Dot,
        DotCr,
    }

    private const int ChunkSize = 16 * 1024;
    private static readonly byte[] CrByte = [(byte)'\r'];

    private readonly DataBudget _budget;
    private readonly SpoolFilePool _pool;
    private readonly long _maxSize;
    private readonly byte[] _chunk = new byte[ChunkSize];
    private SpoolFile? _file;
    private bool _committed;
    private Scan _state = Scan.LineStart;
    private long _reserved;
    private volatile bool _discarded;

    public IncomingMessage(string id, string tempPath, SpoolFilePool pool, DataBudget budget, long maxSize)
    {
        Id = id;
        TempPath = tempPath;
        _pool = pool;
        _budget = budget;
        _maxSize = maxSize;
    }

    /// <summary>The spool id the message will have.</summary>
    public string Id { get; }

    /// <summary>Where the message is written (<c>ID.eml.tmp</c>: a crash leaves it to the spool's cleanup).</summary>
    public string TempPath { get; }

    /// <summary>The message's size after unstuffing, CRLF of its last line included (also counted past the limit).</summary>
    public long Size { get; private set; }

    /// <summary>Bytes received from the client for this message, stuffing and terminator included.</summary>
    public long RawSize { get; private set; }

    /// <summary>Why the message cannot be accepted (452 4.3.1), once that is known; the rest of it is read and dropped.</summary>
    public string? Refusal { get; private set; }

    public bool Oversize => Size > _maxSize;

    /// <summary>
    /// Takes <paramref name="buffer"/> (the bytes received so far and not yet taken): writes what it
    /// holds of the message, and returns how far it read: to the end of the terminator when the
    /// message ended there (<see cref="Ended"/>), else the whole buffer.
    /// </summary>
    public ValueTask<SequencePosition> WriteAsync(ReadOnlySequence<byte> buffer, Func<long, bool> hasRoom, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        long consumed = 0;
        foreach (var memory in buffer)
        {
            var offset = 0;
            while (offset < memory.Length)
            {
                var (read, written, ended) = Unstuff(memory.Span[offset..], _chunk);
                offset += read;
                consumed += read;
                RawSize += read;
                Store(written, hasRoom);
                if (ended)
                {
                    Ended = true;
                    return ValueTask.FromResult(buffer.GetPosition(consumed));
                }
            }
        }

        return ValueTask.FromResult(buffer.End);
    }

    /// <summary>The terminator was read: the message is complete.</summary>
    public bool Ended { get; private set; }

    // Writes go to the page cache (a pwrite on this thread, no hop to the thread pool, as a FileStream's
    // "async" write on Linux made): only CompleteAsync waits for the disk.
    private void Store(int count, Func<long, bool> hasRoom)
    {
        var keep = Refusal is null ? (int)Math.Clamp(_maxSize - Size, 0, count) : 0;
        Size += count;
        if (keep == 0)
        {
            return;
        }

        if (!_budget.TryReserve(keep))
        {
            Refuse("data in flight over the cap");
            return;
        }

        if (_discarded)
        {
            // The session ended under us (teardown): nothing to write, nothing to hold.
            _budget.Release(keep);
            return;
        }

        Interlocked.Add(ref _reserved, keep);
        if (!hasRoom(_budget.Current))
        {
            Refuse("spool quota");
            return;
        }

        try
        {
            _file ??= _pool.CreateFile(TempPath);
            _file.Write(_chunk.AsSpan(0, keep));
        }
        catch (IOException ex)
        {
            Refuse(ex.HResult is 28 or 122 ? "spool full" : "spool write failed: " + ex.Message);
        }
        catch (UnauthorizedAccessException ex)
        {
            Refuse("spool write failed: " + ex.Message);
        }
    }

    private void Refuse(string why)
    {
        Refusal ??= why;
        Discard();
    }

    /// <summary>
    /// Makes the file durable (fsync, on a pool thread: the caller writes the envelope meanwhile) so that
    /// it can be renamed into the spool, and closes it; an empty message gets its (empty) file here.
    /// </summary>
    public Task CompleteAsync()
    {
        var file = _file ??= _pool.CreateFile(TempPath);
        return Task.Run(() =>
        {
            file.Fsync();
            file.Dispose();
        }, CancellationToken.None);
    }

    /// <summary>The store has renamed the file into the spool: give the bytes back to the budget, keep the file.</summary>
    public void Committed()
    {
        _committed = true;
        _file = null;
        Release();
    }

    /// <summary>Deletes the temporary file and gives its bytes back to the budget. Idempotent.</summary>
    public void Discard()
    {
        _discarded = true;
        var file = Interlocked.Exchange(ref _file, null);
        if (file is not null)
        {
            try
            {
                file.Dispose();
            }
            catch (IOException)
            {
                // A full disk can fail the final write-back; the file goes either way.
            }
        }

        if (!_committed)
        {
            MailSpool.TryDelete(TempPath);
        }

        Release();
    }

    private void Release()
    {
        var reserved = Interlocked.Exchange(ref _reserved, 0);
        if (reserved > 0)
        {
            _budget.Release(reserved);
        }
    }

    /// <summary>
    /// Copies <paramref name="input"/> to <paramref name="output"/> less the stuffing dots, until the
    /// output is full, the input is used up, or the terminator ends the message (consumed, not copied).
    /// </summary>
    private (int Read, int Written, bool Ended) Unstuff(ReadOnlySpan<byte> input, Span<byte> output)
    {
        var i = 0;
        var o = 0;
        while (i < input.Length && o < output.Length)
        {
            switch (_state)
            {
                case Scan.Text:
                    var n = Math.Min(input.Length - i, output.Length - o);
                    var cr = input.Slice(i, n).IndexOf((byte)'\r');
                    var take = cr < 0 ? n : cr + 1;
                    input.Slice(i, take).CopyTo(output[o..]);
                    i += take;
                    o += take;
                    if (cr >= 0)
                    {
                        _state = Scan.Cr;
                    }

                    break;

                case Scan.Cr:
                    var b = input[i++];
                    output[o++] = b;
                    _state = b == '\n' ? Scan.LineStart : b == '\r' ? Scan.Cr : Scan.Text;
                    break;

                case Scan.LineStart:
                    if (input[i] == '.')
                    {
                        i++;
                        _state = Scan.Dot;
                    }
                    else
                    {
                        _state = Scan.Text;
                    }

                    break;

                case Scan.Dot:
                    // A line that starts with a dot and has more on it: the dot was stuffing (RFC 5321 §4.5.2).
                    if (input[i] == '\r')
                    {
                        i++;
                        _state = Scan.DotCr;
                    }
                    else
                    {
                        _state = Scan.Text;
                    }

                    break;

                case Scan.DotCr:
                    if (input[i] == '\n')
                    {
                        return (i + 1, o, true);
                    }

                    // ".\r" and more: the dot was stuffing, the CR is text.
                    output[o++] = CrByte[0];
                    _state = Scan.Cr;
                    break;
            }
        }

        return (i, o, false);
    }
}

/// <summary>
/// Bytes of messages being received, across every session of the listener (both roles): what DATA
/// holds on disk before the message is accepted or refused. Past <see cref="Limit"/> a message is
/// refused with 452 4.3.1, so thousands of slow or huge DATA phases cannot fill the spool or memory.
/// </summary>
internal sealed class DataBudget(long limit)
{
    private long _current;
    private long _peak;
    private long _refused;

    public long Limit { get; } = limit;

    public long Current => Interlocked.Read(ref _current);

    /// <summary>The highest <see cref="Current"/> since start.</summary>
    public long Peak => Interlocked.Read(ref _peak);

    /// <summary>Messages refused because the budget was spent.</summary>
    public long Refused => Interlocked.Read(ref _refused);

    public bool TryReserve(long bytes)
    {
        var now = Interlocked.Add(ref _current, bytes);
        if (now > Limit)
        {
            Interlocked.Add(ref _current, -bytes);
            Interlocked.Increment(ref _refused);
            return false;
        }

        var peak = Interlocked.Read(ref _peak);
        while (now > peak && Interlocked.CompareExchange(ref _peak, now, peak) != peak)
        {
            peak = Interlocked.Read(ref _peak);
        }

        return true;
    }

    public void Release(long bytes) => Interlocked.Add(ref _current, -bytes);
}
