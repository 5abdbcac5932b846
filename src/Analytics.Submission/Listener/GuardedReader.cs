using System.Buffers;
using System.IO.Pipelines;
using System.Text;
using System.Text.RegularExpressions;
using SmtpServer.Protocol;

namespace Analytics.Submission.Listener;

/// <summary>
/// The session's input, between the socket and SmtpServer, which would otherwise buffer a line or a
/// message of any length. It enforces the line and message limits, the command budget and shutdown,
/// and replaces AUTH responses that are not valid base64 (SmtpServer would fault the session on
/// them) with a marker the authenticator rejects as malformed. To end a session it reports end of
/// input, which SmtpServer treats as the client going away after our last reply.
/// </summary>
internal sealed partial class GuardedReader : PipeReader
{
    /// <summary>What a malformed AUTH response becomes; no real user name or password starts with U+0001.</summary>
    public const string MalformedMarker = "\u0001malformed";

    private static readonly byte[] MalformedPlain = Encoding.ASCII.GetBytes(Convert.ToBase64String(Encoding.UTF8.GetBytes("\0" + MalformedMarker + "\0")) + "\r\n");
    private static readonly byte[] MalformedLogin = Encoding.ASCII.GetBytes(Convert.ToBase64String(Encoding.UTF8.GetBytes(MalformedMarker)) + "\r\n");
    private const int AuthLineMinimum = 12288; // RFC 4954 §4

    private readonly PipeReader _inner;
    private readonly SessionState _session;
    private readonly ReplyWriter _output;
    private readonly Func<long, bool> _hasRoom;

    // When we hand out a replacement line, where the real one ends in the inner buffer.
    // Past this share of a role's slots in use, idle sessions before AUTH get StressTimeout.
    private const double StressLoad = 0.8;
    private static readonly TimeSpan StressTimeout = TimeSpan.FromSeconds(5);

    private ReadOnlySequence<byte> _replacement;
    private SequencePosition _innerLineEnd;
    private bool _replaced;

    public GuardedReader(PipeReader inner, ReplyWriter output, SessionState session)
    {
        _hasRoom = HasRoom;
        _inner = inner;
        _output = output;
        _session = session;
    }

    private static ReadResult Ended => new(ReadOnlySequence<byte>.Empty, isCanceled: false, isCompleted: true);

    public override async ValueTask<ReadResult> ReadAsync(CancellationToken cancellationToken = default)
    {
        var limits = _session.Listener.LimitOptions.Session;
        while (true)
        {
            if (_session.Closed)
            {
                return Ended;
            }

            if (_session.Phase == SessionPhase.Command)
            {
                if (_session.CloseAfterReply)
                {
                    _session.Closed = true;
                    return Ended;
                }

                if (_session.Listener.Draining && !_session.InTransaction)
                {
                    return await CloseAsync(421, "4.3.2 Service shutting down, closing connection", "shutdown", cancellationToken);
                }

                if (_session.CommandCount >= limits.MaxCommandsPerSession)
                {
                    return await CloseAsync(421, "4.7.0 Too many commands, closing connection", "too many commands", cancellationToken);
                }
            }

            ReadResult result;
            if (_session.Phase == SessionPhase.Command && !_session.PastGreetingStage)
            {
                // Before AUTH (submission) or a transaction (MX) an idle connection gives its slot back soon,
                // and sooner still while its role's pool is nearly full (as Postfix does under stress).
                using var idle = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
                idle.CancelAfter(_session.Listener.Gate.Load(_session.Role) > StressLoad && limits.PreAuthTimeout > StressTimeout ? StressTimeout : limits.PreAuthTimeout);
                Interlocked.Exchange(ref _session.WaitingSince, _session.Listener.Time.GetTimestamp());
                try
                {
                    result = await _inner.ReadAsync(idle.Token);
                }
                catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
                {
                    return await CloseAsync(421, "4.4.2 Timeout, closing connection", "timeout: idle before authentication", cancellationToken);
                }
                finally
                {
                    Interlocked.Exchange(ref _session.WaitingSince, 0);
                }
            }
            else
            {
                result = await _inner.ReadAsync(cancellationToken);
            }

            var buffer = result.Buffer;
            if (result.IsCanceled)
            {
                // Shutdown woke us up (CancelPendingRead): check again at the top. Or a full pool
                // took this idle session's slot for a new connection.
                _inner.AdvanceTo(buffer.Start);
                if (_session.Evicted)
                {
                    return await CloseAsync(421, "4.4.2 Timeout, closing connection", "timeout: idle while the server is full", cancellationToken);
                }

                if (_session.Listener.Draining)
                {
                    continue;
                }

                return result;
            }

            if (result.IsCompleted)
            {
                _session.ClientEof = true;
                return result;
            }

            switch (_session.Phase)
            {
                case SessionPhase.Command:
                case SessionPhase.Auth:
                    // SmtpServer reads a line up to CRLF and keeps the position where its first read
                    // began: every buffer it gets holds a whole line, so it never searches a replacement
                    // (below) from a position in an earlier buffer ("End position was not reached").
                    var max = _session.Phase == SessionPhase.Auth ? Math.Max(limits.MaxLineLength, AuthLineMinimum) : limits.MaxLineLength;
                    var lineEnd = LineEnd(buffer);
                    if (lineEnd is null)
                    {
                        if (buffer.Length > max)
                        {
                            _inner.AdvanceTo(buffer.End);
                            return await CloseAsync(500, "5.5.2 Line too long, closing connection", "line too long", cancellationToken);
                        }

                        _inner.AdvanceTo(buffer.Start, buffer.End);
                        continue;
                    }

                    if (buffer.Slice(buffer.Start, lineEnd.Value).Length > max)
                    {
                        _inner.AdvanceTo(buffer.End);
                        return await CloseAsync(500, "5.5.2 Line too long, closing connection", "line too long", cancellationToken);
                    }

                    return _session.Phase == SessionPhase.Auth ? CheckAuthLine(buffer, lineEnd.Value) : CheckCommandLine(result, lineEnd.Value);

                case SessionPhase.Data:
                    var message = _session.Message ??= StartMessage();
                    var end = await message.WriteAsync(buffer, _hasRoom, cancellationToken);

                    // Raw bytes include dot-stuffing and the terminator: allow a little over the limit.
                    if (message.RawSize > limits.MaxMessageSize + (limits.MaxMessageSize / 32) + 1024)
                    {
                        _inner.AdvanceTo(buffer.End);
                        _session.DiscardMessage();
                        _session.Oversize = true;
                        _session.CloseAfterReply = true;
                        _session.ServerCloses("message too large");

                        // DataCommand answers an exception with 554; the reply writer renders it as 552 5.3.4.
                        throw new MessageTooLargeException();
                    }

                    if (!message.Ended)
                    {
                        // Everything received is on disk (or dropped, for a message refused): nothing is held here.
                        _inner.AdvanceTo(end);
                        continue;
                    }

                    // SmtpServer gets only the end of data, and hands the store an empty body: the
                    // store takes the message from the session's file.
                    _replacement = new ReadOnlySequence<byte>(DotBlock);
                    _innerLineEnd = end;
                    _replaced = true;
                    return new ReadResult(_replacement, isCanceled: false, isCompleted: false);
            }

            return result;
        }
    }

    /// <summary>
    /// Cases where SmtpServer's parser faults and drops the session without a reply, so the line
    /// reaches it in a shape it handles: MAIL or RCPT with an ESMTP parameter given twice
    /// (<c>BODY=7BIT BODY=8BITMIME</c>, a syntax error by RFC 5321 §4.1.2) or with a backslash in its
    /// path (<see cref="HasBackslashInPath"/>) arrives as a bare
    /// <c>MAIL FROM:</c>, which it answers 501 like any syntax error; and a command line that spans two
    /// buffer segments (its parameter parser handles one segment only) arrives as one contiguous copy.
    /// </summary>
    private ReadResult CheckCommandLine(ReadResult result, SequencePosition lineEnd)
    {
        var buffer = result.Buffer;
        var line = buffer.Slice(buffer.Start, lineEnd);
        Span<byte> head = stackalloc byte[4];
        var verb = line.Length >= 4 ? line.Slice(0, 4) : default;
        verb.CopyTo(head);
        var mail = line.Length >= 4 && Ascii.EqualsIgnoreCase(head, "MAIL"u8);
        var rcpt = line.Length >= 4 && Ascii.EqualsIgnoreCase(head, "RCPT"u8);
        if ((mail || rcpt) && (HasDuplicateParameter(Encoding.Latin1.GetString(line)) || HasBackslashInPath(Encoding.Latin1.GetString(line))))
        {
            _replacement = new ReadOnlySequence<byte>(mail ? BareMail : BareRcpt);
        }
        else if (!line.IsSingleSegment)
        {
            _replacement = new ReadOnlySequence<byte>(line.ToArray());
        }
        else
        {
            return result;
        }

        _innerLineEnd = lineEnd;
        _replaced = true;
        return new ReadResult(_replacement, isCanceled: false, isCompleted: false);
    }

    private static readonly byte[] DotBlock = "\r\n.\r\n"u8.ToArray();

    private IncomingMessage StartMessage()
    {
        var listener = _session.Listener;
        var id = listener.Spool.NewId(listener.Time.GetUtcNow(), _session.Id);
        return new IncomingMessage(id, listener.Spool.MessagePath(id) + ".tmp", listener.Spool.Pool, listener.DataBudget, listener.LimitOptions.Session.MaxMessageSize);
    }

    private bool HasRoom(long bytesInFlight) => _session.Listener.Queue?.HasRoomFor(bytesInFlight) ?? true;

    /// <summary>Just past the first CRLF (where SmtpServer ends a line), if there is one.</summary>
    private static SequencePosition? LineEnd(ReadOnlySequence<byte> buffer)
    {
        var reader = new SequenceReader<byte>(buffer);
        return reader.TryReadTo(out ReadOnlySequence<byte> _, "\r\n"u8) ? reader.Position : null;
    }

    private static readonly byte[] BareMail = "MAIL FROM:\r\n"u8.ToArray();
    private static readonly byte[] BareRcpt = "RCPT TO:\r\n"u8.ToArray();

    /// <summary>
    /// Whether the path (from the colon to the last <c>&gt;</c>) holds a backslash. SmtpServer passes a
    /// quoted local part through <c>Regex.Unescape</c>, which throws on <c>\q</c> and many other
    /// RFC 5321 quoted-pairs (and turns <c>\n</c> into a newline): such a path is refused as a syntax error.
    /// </summary>
    internal static bool HasBackslashInPath(string line)
    {
        var colon = line.IndexOf(':', StringComparison.Ordinal);
        if (colon < 0)
        {
            return false;
        }

        var close = line.LastIndexOf('>');
        return line.AsSpan(colon, (close > colon ? close : line.Length) - colon).Contains('\\');
    }

    /// <summary>Whether the parameters after the path (<c>KEY[=VALUE]</c>, space-separated) name one key twice.</summary>
    internal static bool HasDuplicateParameter(string line)
    {
        var close = line.IndexOf('>', StringComparison.Ordinal);
        if (close < 0)
        {
            return false;
        }

        var keys = new HashSet<string>(StringComparer.OrdinalIgnoreCase);
        foreach (var token in line[(close + 1)..].Split([' ', '\t', '\r', '\n'], StringSplitOptions.RemoveEmptyEntries))
        {
            var equals = token.IndexOf('=', StringComparison.Ordinal);
            if (!keys.Add(equals < 0 ? token : token[..equals]))
            {
                return true;
            }
        }

        return false;
    }

    private ReadResult CheckAuthLine(ReadOnlySequence<byte> buffer, SequencePosition lineEnd)
    {
        var line = buffer.Slice(buffer.Start, lineEnd);
        var text = Encoding.ASCII.GetString(line).TrimEnd('\r', '\n').Trim();
        var plain = _session.CurrentCommand is AuthCommand { Method: AuthenticationMethod.Plain };
        if (IsAcceptableAuthResponse(text, plain))
        {
            return new ReadResult(line, isCanceled: false, isCompleted: false);
        }

        _replacement = new ReadOnlySequence<byte>(plain ? MalformedPlain : MalformedLogin);
        _innerLineEnd = lineEnd;
        _replaced = true;
        return new ReadResult(_replacement, isCanceled: false, isCompleted: false);
    }

    /// <summary>True when SmtpServer can decode <paramref name="base64"/> without faulting (and, for PLAIN, find user and password).</summary>
    internal static bool IsAcceptableAuthResponse(string base64, bool plain)
    {
        if (base64.Length == 0 && !plain)
        {
            return true;
        }

        var bytes = new byte[(base64.Length / 4 * 3) + 3];
        if (!Convert.TryFromBase64String(base64, bytes, out var written))
        {
            return false;
        }

        return !plain || PlainShape().IsMatch(Encoding.UTF8.GetString(bytes, 0, written));
    }

    [GeneratedRegex("\0.*\0")]
    private static partial Regex PlainShape();

    private async ValueTask<ReadResult> CloseAsync(int code, string text, string reason, CancellationToken cancellationToken)
    {
        _session.ServerCloses(reason);
        _session.PrepareServerReply();
        try
        {
            await _output.WriteReplyAsync(code, text, cancellationToken);
        }
        catch (Exception ex) when (ex is IOException or ObjectDisposedException or OperationCanceledException)
        {
            // The client is gone already; the session ends either way.
        }

        _session.Closed = true;
        return Ended;
    }

    public override void AdvanceTo(SequencePosition consumed) => AdvanceTo(consumed, consumed);

    public override void AdvanceTo(SequencePosition consumed, SequencePosition examined)
    {
        if (_replaced)
        {
            // A replacement line is consumed whole (SmtpServer reads it as one line); never replay it.
            _replaced = false;
            _inner.AdvanceTo(_innerLineEnd);
            return;
        }

        _inner.AdvanceTo(consumed, examined);
    }

    public override void CancelPendingRead() => _inner.CancelPendingRead();

    public override void Complete(Exception? exception = null) => _inner.Complete(exception);

    public override ValueTask CompleteAsync(Exception? exception = null) => _inner.CompleteAsync(exception);

    public override bool TryRead(out ReadResult result)
    {
        // Every read goes through the checks in ReadAsync.
        result = default;
        return false;
    }
}

/// <summary>The client sent more than the message size limit.</summary>
internal sealed class MessageTooLargeException : Exception
{
    public MessageTooLargeException()
        : base("The message exceeds the configured maximum size.")
    {
    }

    public MessageTooLargeException(string message)
        : base(message)
    {
    }

    public MessageTooLargeException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}
