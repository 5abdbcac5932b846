using System.IO.Pipelines;
using System.Net.Sockets;
using System.Text;
using Microsoft.Extensions.Logging;

namespace Analytics.Policy;

/// <summary>
/// Postfix's SMTPD access policy delegation (<c>check_policy_service</c>) on a Unix socket or a loopback
/// port. Each smtpd process keeps one connection and sends its requests one after another; each is
/// answered from memory (the limit book, the session) with one <c>action=…</c> line and an empty line.
/// Events go to the sink without waiting. A tarpit holds the answer back (never past
/// <see cref="PolicyOptions.MaxReplyDelay"/>) without holding anything else. Bad input is answered
/// DUNNO and logged; nothing a client sends ends more than its own connection.
/// </summary>
internal sealed partial class PostfixPolicyServer : IAsyncDisposable
{
    private static readonly byte[] DunnoReply = "action=DUNNO\n\n"u8.ToArray();

    private readonly PolicyEngine _engine;
    private readonly PostfixPolicy _policy;
    private readonly PolicyEndpoint _endpoint;
    private readonly ILogger _logger;
    private PolicyListener? _listener;

    public PostfixPolicyServer(PolicyEngine engine, PolicyEndpoint endpoint, ILogger logger)
    {
        _engine = engine;
        _policy = new PostfixPolicy(engine);
        _endpoint = endpoint;
        _logger = logger;
    }

    /// <summary>Where it listens, as <c>check_policy_service</c> is written (<c>unix:/path</c> or <c>127.0.0.1:PORT</c>, with the real port).</summary>
    public string Address { get; private set; } = "";

    public int ConnectionCount => Volatile.Read(ref _open);

    private int _open;

    public void Start()
    {
        var options = _engine.Options;
        var group = options.PostfixSocketGroup is { Length: > 0 } name ? PolicyEndpoint.GroupId(name) : null;
        var socket = _endpoint.Bind(options.SocketMode, group);
        Address = PolicyEndpoint.Describe(socket);
        _listener = new PolicyListener(socket, ServeAsync, _engine.Time, error => LogAcceptFailed(_logger, error));
    }

    /// <summary>One smtpd process's connection: requests in, answers out, in order, until either side closes.</summary>
    internal async Task ServeAsync(Socket client, CancellationToken cancellationToken)
    {
        await Task.Yield();
        Interlocked.Increment(ref _open);
        var options = _engine.Options;
        await using var stream = new NetworkStream(client, ownsSocket: true);
        var reader = new PostfixRequestReader(PipeReader.Create(stream, new StreamPipeReaderOptions(bufferSize: 4096, leaveOpen: true)),
            options.MaxAttributeLength, options.MaxAttributes);
        try
        {
            while (!cancellationToken.IsCancellationRequested)
            {
                var read = await reader.ReadAsync(cancellationToken);
                if (read.Error is { } error)
                {
                    LogBadRequest(_logger, error);
                    await stream.WriteAsync(DunnoReply, cancellationToken);
                    if (read.End)
                    {
                        break;
                    }

                    continue;
                }

                if (read.End)
                {
                    break;
                }

                var answer = read.Request!.Request is "smtpd_access_policy" or "" ? Decide(read.Request) : Unknown(read.Request.Request);
                if (answer.Delay > TimeSpan.Zero)
                {
                    await Task.Delay(answer.Delay < options.MaxReplyDelay ? answer.Delay : options.MaxReplyDelay, _engine.Time, cancellationToken);
                }

                await stream.WriteAsync(answer.Action == "DUNNO" ? DunnoReply : Encoding.UTF8.GetBytes("action=" + answer.Action + "\n\n"), cancellationToken);
            }
        }
        catch (Exception ex) when (ex is IOException or SocketException or OperationCanceledException or ObjectDisposedException)
        {
            // Postfix closed the connection (idle, TTL, smtpd exit) or the server is stopping.
        }
        finally
        {
            Interlocked.Decrement(ref _open);
        }
    }

    private PostfixAnswer Decide(PostfixRequest request)
    {
        try
        {
            return _policy.Decide(request);
        }
        catch (Exception ex)
        {
            // A bug here must not become Postfix's default action for every message: answer DUNNO and say so.
            LogDecisionFailed(_logger, ex);
            return PostfixAnswer.Dunno;
        }
    }

    private PostfixAnswer Unknown(string request)
    {
        LogBadRequest(_logger, $"request={(request.Length > 40 ? request[..40] : request)} is not smtpd_access_policy");
        return PostfixAnswer.Dunno;
    }

    public async ValueTask DisposeAsync()
    {
        if (_listener is not null)
        {
            await _listener.DisposeAsync();
        }

        if (_endpoint.UnixPath is { } path)
        {
            try
            {
                File.Delete(path);
            }
            catch (IOException)
            {
            }
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Postfix policy request answered DUNNO: {Error}")]
    private static partial void LogBadRequest(ILogger logger, string error);

    [LoggerMessage(Level = LogLevel.Error, Message = "Postfix policy request answered DUNNO after an internal error")]
    private static partial void LogDecisionFailed(ILogger logger, Exception exception);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Postfix policy accept failed ({Error}); retrying")]
    private static partial void LogAcceptFailed(ILogger logger, SocketError error);
}
