using System.Buffers;
using System.Globalization;
using System.IO.Pipelines;
using System.Text;

namespace Analytics.Submission.Listener;

/// <summary>
/// The session's output. SmtpServer writes a reply and flushes; we hold the bytes until the flush,
/// render the reply (<see cref="Replies"/>), apply any tarpit delay, tell the session which reply goes
/// out (what every command event records), and send it.
/// </summary>
internal sealed class ReplyWriter : PipeWriter
{
    private readonly PipeWriter _inner;
    private readonly SessionState _session;
    private readonly ArrayBufferWriter<byte> _pending = new(512);

    public ReplyWriter(PipeWriter inner, SessionState session)
    {
        _inner = inner;
        _session = session;
    }

    public override void Advance(int bytes) => _pending.Advance(bytes);

    public override Memory<byte> GetMemory(int sizeHint = 0) => _pending.GetMemory(sizeHint);

    public override Span<byte> GetSpan(int sizeHint = 0) => _pending.GetSpan(sizeHint);

    public override void CancelPendingFlush() => _inner.CancelPendingFlush();

    public override void Complete(Exception? exception = null) => _inner.Complete(exception);

    public override ValueTask CompleteAsync(Exception? exception = null) => _inner.CompleteAsync(exception);

    public override async ValueTask<FlushResult> FlushAsync(CancellationToken cancellationToken = default)
    {
        if (_pending.WrittenCount == 0)
        {
            return await _inner.FlushAsync(cancellationToken);
        }

        // Latin-1 maps bytes to chars one to one: whatever SmtpServer wrote survives the round trip.
        var raw = Encoding.Latin1.GetString(_pending.WrittenSpan);
        _pending.ResetWrittenCount();
        var (text, code, status, final) = Render(raw);

        var delay = _session.TakeReplyDelay();
        if (delay > TimeSpan.Zero)
        {
            await Task.Delay(delay, _session.Listener.Time, cancellationToken);
        }

        if (_session.Closed)
        {
            return new FlushResult(isCanceled: false, isCompleted: true);
        }

        // The command's event is published before the reply goes out; a reply that says a message was
        // taken waits until the session's events would outlive the process (see IEventPublisher).
        if (_session.OnReply(code, status, final))
        {
            await _session.Listener.Events.WaitDurableAsync(SessionState.DurableEventsWait, cancellationToken);
        }

        _inner.Write(Encoding.Latin1.GetBytes(text));
        return await _inner.FlushAsync(cancellationToken);
    }

    /// <summary>Writes a reply of our own (not SmtpServer's) and flushes it.</summary>
    public ValueTask<FlushResult> WriteReplyAsync(int code, string statusAndText, CancellationToken cancellationToken)
    {
        var line = code.ToString(CultureInfo.InvariantCulture) + " " + statusAndText + "\r\n";
        Encoding.ASCII.GetBytes(line, _pending);
        return FlushAsync(cancellationToken);
    }

    private (string Text, int Code, string Status, string Final) Render(string raw)
    {
        var lines = raw.Split("\r\n", StringSplitOptions.RemoveEmptyEntries);
        if (lines.Length == 0)
        {
            return (raw, 0, "", "");
        }

        var last = lines[^1];
        var code = last.Length >= 3 && int.TryParse(last.AsSpan(0, 3), NumberStyles.None, CultureInfo.InvariantCulture, out var c) ? c : 0;
        var message = last.Length > 4 ? last[4..] : "";
        if (_session.AwaitingGreeting)
        {
            // The greeting: no software version on the wire.
            return ($"220 {_session.Listener.Options.ServerName} ESMTP ready\r\n", 220, "", "");
        }

        // Multi-line replies (EHLO) and continuations (334, 354) go out as written.
        if (lines.Length > 1 || code is >= 300 and < 400 || _session.IsHeloReply)
        {
            return (raw, code, "", message);
        }

        var (rendered, status, text) = Replies.Render(code, message, _session, _session.CurrentCommand);
        return ($"{rendered} {status} {text}\r\n", rendered, status, text);
    }
}
