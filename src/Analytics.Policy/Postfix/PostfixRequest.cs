using System.Buffers;
using System.Collections.Frozen;
using System.IO.Pipelines;
using System.Text;

namespace Analytics.Policy;

/// <summary>
/// One SMTPD access policy request (Postfix's SMTPD_POLICY_README): the attributes the engine reads.
/// Every value is as Postfix sent it (empty when absent); the rest of the ~30 attributes are skipped.
/// </summary>
internal sealed class PostfixRequest
{
    public string Request { get; set; } = "";

    /// <summary>CONNECT, EHLO, HELO, MAIL, RCPT, DATA, END-OF-MESSAGE, VRFY or ETRN.</summary>
    public string ProtocolState { get; set; } = "";

    public string ProtocolName { get; set; } = "";

    public string ClientAddress { get; set; } = "";

    public string ClientPort { get; set; } = "";

    public string HeloName { get; set; } = "";

    public string Sender { get; set; } = "";

    public string Recipient { get; set; } = "";

    public string RecipientCount { get; set; } = "";

    public string QueueId { get; set; } = "";

    /// <summary>The same for every request about one message (one MAIL transaction).</summary>
    public string Instance { get; set; } = "";

    public string Size { get; set; } = "";

    public string SaslMethod { get; set; } = "";

    public string SaslUsername { get; set; } = "";

    public string EncryptionProtocol { get; set; } = "";

    public string EncryptionCipher { get; set; } = "";

    public string CcertSubject { get; set; } = "";

    /// <summary><c>policy_context</c> (Postfix 3.1+): <c>connect</c> asks only what the listener asks of a new connection.</summary>
    public string PolicyContext { get; set; } = "";

    public int Attributes { get; set; }

    private static readonly FrozenDictionary<string, Action<PostfixRequest, string>> Setters = new Dictionary<string, Action<PostfixRequest, string>>
    {
        ["request"] = (r, v) => r.Request = v,
        ["protocol_state"] = (r, v) => r.ProtocolState = v,
        ["protocol_name"] = (r, v) => r.ProtocolName = v,
        ["client_address"] = (r, v) => r.ClientAddress = v,
        ["client_port"] = (r, v) => r.ClientPort = v,
        ["helo_name"] = (r, v) => r.HeloName = v,
        ["sender"] = (r, v) => r.Sender = v,
        ["recipient"] = (r, v) => r.Recipient = v,
        ["recipient_count"] = (r, v) => r.RecipientCount = v,
        ["queue_id"] = (r, v) => r.QueueId = v,
        ["instance"] = (r, v) => r.Instance = v,
        ["size"] = (r, v) => r.Size = v,
        ["sasl_method"] = (r, v) => r.SaslMethod = v,
        ["sasl_username"] = (r, v) => r.SaslUsername = v,
        ["encryption_protocol"] = (r, v) => r.EncryptionProtocol = v,
        ["encryption_cipher"] = (r, v) => r.EncryptionCipher = v,
        ["ccert_subject"] = (r, v) => r.CcertSubject = v,
        ["policy_context"] = (r, v) => r.PolicyContext = v,
    }.ToFrozenDictionary(StringComparer.Ordinal);

    private static readonly FrozenDictionary<string, Action<PostfixRequest, string>>.AlternateLookup<ReadOnlySpan<char>> SetterLookup =
        Setters.GetAlternateLookup<ReadOnlySpan<char>>();

    /// <summary>Sets the attribute named <paramref name="name"/> (ASCII) if it is one the engine reads.</summary>
    public void Set(ReadOnlySpan<byte> name, ReadOnlySequence<byte> value)
    {
        Attributes++;
        if (name.Length > 32)
        {
            return;
        }

        Span<char> chars = stackalloc char[name.Length];
        for (var i = 0; i < name.Length; i++)
        {
            chars[i] = (char)name[i];
        }

        if (SetterLookup.TryGetValue(chars, out var set))
        {
            // Values are UTF-8 (SMTPUTF8) or ASCII; invalid bytes become U+FFFD, never an exception.
            set(this, value.IsEmpty ? "" : Encoding.UTF8.GetString(value));
        }
    }
}

/// <summary>The next request from a policy connection: a request, a request that was malformed, or the end.</summary>
internal readonly record struct PostfixRead(PostfixRequest? Request, string? Error, bool End)
{
    /// <summary>The connection ended in the middle of a request (no final empty line).</summary>
    public bool Truncated => End && Error is not null;
}

/// <summary>
/// Reads Postfix policy requests from a connection: <c>name=value</c> lines ending with an empty line.
/// Bad input never throws: a line longer than the limit is skipped without being buffered, a request
/// with too many attributes or a line without <c>=</c> is read to its end and reported as an error (the
/// caller answers DUNNO), and a connection that ends inside a request is reported as truncated.
/// </summary>
internal sealed class PostfixRequestReader
{
    private readonly PipeReader _reader;
    private readonly int _maxLine;
    private readonly int _maxAttributes;

    public PostfixRequestReader(PipeReader reader, int maxLine, int maxAttributes)
    {
        _reader = reader;
        _maxLine = maxLine;
        _maxAttributes = maxAttributes;
    }

    public async ValueTask<PostfixRead> ReadAsync(CancellationToken cancellationToken)
    {
        var request = new PostfixRequest();
        string? error = null;
        var skipping = false; // inside a line longer than the limit
        var any = false;       // bytes of this request seen
        while (true)
        {
            var result = await _reader.ReadAsync(cancellationToken);
            var buffer = result.Buffer;
            var (done, consumed) = Parse(ref buffer, request, ref error, ref skipping, ref any);
            if (done)
            {
                _reader.AdvanceTo(consumed);
                return new PostfixRead(request, error, false);
            }

            if (result.IsCompleted || result.IsCanceled)
            {
                _reader.AdvanceTo(buffer.End);
                return any || !buffer.IsEmpty
                    ? new PostfixRead(null, error ?? "the connection ended inside a request (no final empty line)", true)
                    : new PostfixRead(null, null, true);
            }

            // Keep the partial line (it is short, else it is being skipped); everything was examined.
            _reader.AdvanceTo(consumed, buffer.End);
        }
    }

    /// <summary>Consumes complete lines; true (with the position after the empty line) once a request is complete.</summary>
    private (bool Done, SequencePosition Consumed) Parse(ref ReadOnlySequence<byte> buffer, PostfixRequest request, ref string? error, ref bool skipping, ref bool any)
    {
        var reader = new SequenceReader<byte>(buffer);
        while (true)
        {
            if (!reader.TryReadTo(out ReadOnlySequence<byte> line, (byte)'\n'))
            {
                // No end of line yet. A partial line past the limit is dropped as it comes.
                if (reader.Remaining > _maxLine)
                {
                    any = true;
                    skipping = true;
                    error ??= $"an attribute line is longer than {_maxLine} bytes";
                    reader.Advance(reader.Remaining);
                }

                buffer = buffer.Slice(reader.Position);
                return (false, reader.Position);
            }

            if (skipping)
            {
                skipping = false; // the rest of an over-long line
                continue;
            }

            if (line.Length > 0 && line.Slice(line.Length - 1).FirstSpan[0] == (byte)'\r')
            {
                line = line.Slice(0, line.Length - 1);
            }

            if (line.IsEmpty)
            {
                if (!any)
                {
                    continue; // stray empty lines between requests
                }

                buffer = buffer.Slice(reader.Position);
                return (true, reader.Position);
            }

            any = true;
            if (line.Length > _maxLine)
            {
                error ??= $"an attribute line is longer than {_maxLine} bytes";
                continue;
            }

            if (request.Attributes >= _maxAttributes)
            {
                error ??= $"more than {_maxAttributes} attributes in one request";
                continue;
            }

            var equals = line.PositionOf((byte)'=');
            if (equals is null)
            {
                error ??= "a line without '=' (" + Printable(line) + ")";
                continue;
            }

            var name = line.Slice(0, equals.Value);
            var value = line.Slice(line.GetPosition(1, equals.Value));
            request.Set(name.IsSingleSegment ? name.FirstSpan : name.ToArray(), value);
        }
    }

    /// <summary>The start of a bad line, printable ASCII only: enough to recognise it in a log, never the whole of it.</summary>
    private static string Printable(ReadOnlySequence<byte> line)
    {
        var sb = new StringBuilder(32);
        foreach (var b in line.Slice(0, Math.Min(line.Length, 32)).ToArray())
        {
            sb.Append(b is >= 32 and < 127 ? (char)b : '?');
        }

        return sb.ToString();
    }
}
