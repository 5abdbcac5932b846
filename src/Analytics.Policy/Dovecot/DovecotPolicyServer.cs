using System.Buffers;
using System.Globalization;
using System.IO.Pipelines;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Microsoft.Extensions.Logging;

namespace Analytics.Policy;

/// <summary>
/// Dovecot's authentication policy server on a loopback port: <c>POST /?command=allow</c> and
/// <c>…=report</c> with a JSON body, answered <c>{"status":N,"msg":"…"}</c>. Dovecot's HTTP client sends
/// HTTP/1.1 with a <c>Content-Length</c> and keeps the connection open, so this is the small part of
/// HTTP it uses, with bounded reads; anything else is a clear 4xx. A body that is not what Dovecot
/// sends is answered allow (status 0) with the reason in <c>msg</c> and in the log: a bad request never
/// locks anyone out, and never takes the server down.
/// </summary>
internal sealed partial class DovecotPolicyServer : IAsyncDisposable
{
    private readonly PolicyEngine _engine;
    private readonly DovecotPolicy _policy;
    private readonly PolicyEndpoint _endpoint;
    private readonly ILogger _logger;
    private readonly byte[]? _apiKey;
    private PolicyListener? _listener;

    public DovecotPolicyServer(PolicyEngine engine, PolicyEndpoint endpoint, ILogger logger)
    {
        _engine = engine;
        _policy = new DovecotPolicy(engine);
        _endpoint = endpoint;
        _logger = logger;
        _apiKey = engine.Options.DovecotApiKey is { Length: > 0 } key ? Encoding.UTF8.GetBytes(key) : null;
    }

    /// <summary>The URL for <c>auth_policy_server_url</c>, with the real port.</summary>
    public string Url { get; private set; } = "";

    public void Start()
    {
        var socket = _endpoint.Bind();
        Url = "http://" + PolicyEndpoint.Describe(socket) + "/";
        _listener = new PolicyListener(socket, ServeAsync, _engine.Time);
    }

    /// <summary>One keep-alive connection: requests in order until the client closes or a request cannot be read safely.</summary>
    internal async Task ServeAsync(Socket client, CancellationToken cancellationToken)
    {
        await Task.Yield();
        await using var stream = new NetworkStream(client, ownsSocket: true);
        var reader = PipeReader.Create(stream, new StreamPipeReaderOptions(leaveOpen: true));
        try
        {
            while (!cancellationToken.IsCancellationRequested)
            {
                var request = await ReadRequestAsync(reader, cancellationToken);
                if (request is null)
                {
                    return;
                }

                var (status, body) = Handle(request.Value);
                await WriteAsync(stream, status, body, request.Value.KeepAlive && status < 400, cancellationToken);
                if (!request.Value.KeepAlive || status >= 400)
                {
                    return;
                }
            }
        }
        catch (Exception ex) when (ex is IOException or SocketException or OperationCanceledException or ObjectDisposedException)
        {
        }
        finally
        {
            await reader.CompleteAsync();
        }
    }

    private (int Status, byte[] Body) Handle(HttpRequest request)
    {
        if (request.Error is { } error)
        {
            LogBadRequest(_logger, error.Reason);
            return (error.Status, Json(0, error.Reason));
        }

        if (_apiKey is not null && (request.ApiKey is null || !CryptographicOperations.FixedTimeEquals(request.ApiKey, _apiKey)))
        {
            LogBadRequest(_logger, "missing or wrong X-API-Key");
            return (401, Json(0, "missing or wrong X-API-Key"));
        }

        if (request.Command is not ("allow" or "report"))
        {
            LogBadRequest(_logger, $"unknown command '{request.Command}'");
            return (200, Json(0, "unknown command; allowed"));
        }

        if (!DovecotRequest.TryParse(request.Command, request.Body, out var parsed, out var parseError))
        {
            LogBadRequest(_logger, parseError);
            return (200, Json(0, "malformed request (" + parseError + "); allowed"));
        }

        try
        {
            var answer = _policy.Decide(parsed);
            return (200, Json(answer.Status, answer.Message));
        }
        catch (Exception ex)
        {
            LogDecisionFailed(_logger, ex);
            return (200, Json(0, "internal error; allowed"));
        }
    }

    private static byte[] Json(int status, string message)
    {
        var buffer = new ArrayBufferWriter<byte>(64);
        using (var writer = new Utf8JsonWriter(buffer))
        {
            writer.WriteStartObject();
            writer.WriteNumber("status", status);
            writer.WriteString("msg", message);
            writer.WriteEndObject();
        }

        return buffer.WrittenSpan.ToArray();
    }

    private static async Task WriteAsync(Stream stream, int status, byte[] body, bool keepAlive, CancellationToken cancellationToken)
    {
        var reason = status switch
        {
            200 => "OK",
            400 => "Bad Request",
            401 => "Unauthorized",
            405 => "Method Not Allowed",
            411 => "Length Required",
            413 => "Content Too Large",
            431 => "Request Header Fields Too Large",
            _ => "Not Implemented",
        };
        var head = string.Create(CultureInfo.InvariantCulture,
            $"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {body.Length}\r\nConnection: {(keepAlive ? "keep-alive" : "close")}\r\n\r\n");
        var bytes = new byte[Encoding.ASCII.GetByteCount(head) + body.Length];
        var n = Encoding.ASCII.GetBytes(head, bytes);
        body.CopyTo(bytes, n);
        await stream.WriteAsync(bytes, cancellationToken);
    }

    private readonly record struct HttpError(int Status, string Reason);

    private readonly record struct HttpRequest(string Command, byte[] Body, byte[]? ApiKey, bool KeepAlive, HttpError? Error);

    /// <summary>The next request, null at the end of the connection. Errors come back as a request with <see cref="HttpRequest.Error"/> set (the connection then closes).</summary>
    private async Task<HttpRequest?> ReadRequestAsync(PipeReader reader, CancellationToken cancellationToken)
    {
        var max = _engine.Options.MaxDovecotRequestBytes;
        ReadOnlySequence<byte> head;
        while (true)
        {
            var result = await reader.ReadAsync(cancellationToken);
            var buffer = result.Buffer;
            var end = FindHeadEnd(buffer);
            if (end is { } position)
            {
                head = buffer.Slice(0, position);
                var (parsed, length) = ParseHead(Encoding.Latin1.GetString(head));
                reader.AdvanceTo(buffer.GetPosition(4, position));
                if (parsed.Error is not null)
                {
                    return parsed;
                }

                if (length > max)
                {
                    return parsed with { Error = new HttpError(413, $"body of {length} bytes (at most {max})") };
                }

                var body = await ReadBodyAsync(reader, (int)length, cancellationToken);
                return body is null ? null : parsed with { Body = body };
            }

            if (buffer.Length > max)
            {
                reader.AdvanceTo(buffer.End);
                return new HttpRequest("", [], null, false, new HttpError(431, $"request head longer than {max} bytes"));
            }

            if (result.IsCompleted)
            {
                reader.AdvanceTo(buffer.End);
                return null;
            }

            reader.AdvanceTo(buffer.Start, buffer.End);
        }
    }

    private static async Task<byte[]?> ReadBodyAsync(PipeReader reader, int length, CancellationToken cancellationToken)
    {
        if (length == 0)
        {
            return [];
        }

        while (true)
        {
            var result = await reader.ReadAsync(cancellationToken);
            if (result.Buffer.Length >= length)
            {
                var body = result.Buffer.Slice(0, length).ToArray();
                reader.AdvanceTo(result.Buffer.GetPosition(length));
                return body;
            }

            if (result.IsCompleted)
            {
                reader.AdvanceTo(result.Buffer.End);
                return null; // the client went away in the middle of its body
            }

            reader.AdvanceTo(result.Buffer.Start, result.Buffer.End);
        }
    }

    private static SequencePosition? FindHeadEnd(ReadOnlySequence<byte> buffer)
    {
        var reader = new SequenceReader<byte>(buffer);
        return reader.TryReadTo(out ReadOnlySequence<byte> _, "\r\n\r\n"u8, advancePastDelimiter: false) ? reader.Position : null;
    }

    private readonly record struct Head(HttpRequest Request, long Length);

    private static Head ParseHead(string text)
    {
        var lines = text.Split("\r\n");
        var parts = lines[0].Split(' ');
        if (parts.Length != 3 || !parts[2].StartsWith("HTTP/1.", StringComparison.Ordinal))
        {
            return new Head(new HttpRequest("", [], null, false, new HttpError(400, "not an HTTP/1.x request line")), 0);
        }

        var keepAlive = parts[2] == "HTTP/1.1";
        long length = -1;
        byte[]? apiKey = null;
        for (var i = 1; i < lines.Length; i++)
        {
            var colon = lines[i].IndexOf(':', StringComparison.Ordinal);
            if (colon <= 0)
            {
                return new Head(new HttpRequest("", [], null, false, new HttpError(400, "a header line without ':'")), 0);
            }

            var name = lines[i][..colon].Trim();
            var value = lines[i][(colon + 1)..].Trim();
            if (name.Equals("Content-Length", StringComparison.OrdinalIgnoreCase))
            {
                if (!long.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out length))
                {
                    return new Head(new HttpRequest("", [], null, false, new HttpError(400, "a Content-Length that is not a number")), 0);
                }
            }
            else if (name.Equals("Transfer-Encoding", StringComparison.OrdinalIgnoreCase))
            {
                return new Head(new HttpRequest("", [], null, false, new HttpError(501, "Transfer-Encoding is not supported; send a Content-Length")), 0);
            }
            else if (name.Equals("Connection", StringComparison.OrdinalIgnoreCase))
            {
                keepAlive = value.Equals("close", StringComparison.OrdinalIgnoreCase) ? false : value.Equals("keep-alive", StringComparison.OrdinalIgnoreCase) || keepAlive;
            }
            else if (name.Equals("X-API-Key", StringComparison.OrdinalIgnoreCase))
            {
                apiKey = Encoding.UTF8.GetBytes(value);
            }
        }

        if (parts[0] != "POST")
        {
            return new Head(new HttpRequest("", [], null, false, new HttpError(405, $"method {Clip(parts[0])} (Dovecot POSTs)")), 0);
        }

        if (length < 0)
        {
            return new Head(new HttpRequest("", [], null, false, new HttpError(411, "no Content-Length")), 0);
        }

        return new Head(new HttpRequest(Command(parts[1]), [], apiKey, keepAlive, null), length);
    }

    /// <summary>The <c>command</c> query parameter (Dovecot appends <c>?command=…</c>, or <c>command=…</c> after a URL ending in <c>&amp;</c>).</summary>
    private static string Command(string target)
    {
        var query = target.IndexOf('?', StringComparison.Ordinal);
        if (query < 0)
        {
            return "";
        }

        foreach (var pair in target[(query + 1)..].Split('&'))
        {
            if (pair.StartsWith("command=", StringComparison.Ordinal))
            {
                return Uri.UnescapeDataString(pair[8..]);
            }
        }

        return "";
    }

    private static string Clip(string value) => value.Length <= 16 ? value : value[..16];

    public async ValueTask DisposeAsync()
    {
        if (_listener is not null)
        {
            await _listener.DisposeAsync();
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Dovecot policy request answered allow: {Error}")]
    private static partial void LogBadRequest(ILogger logger, string error);

    [LoggerMessage(Level = LogLevel.Error, Message = "Dovecot policy request answered allow after an internal error")]
    private static partial void LogDecisionFailed(ILogger logger, Exception exception);
}
