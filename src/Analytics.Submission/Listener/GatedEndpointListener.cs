using System.Net;
using System.Net.Sockets;
using System.Text;
using Analytics.Events;
using SmtpServer;
using SmtpServer.IO;
using SmtpServer.Net;

namespace Analytics.Submission.Listener;

/// <summary>Hands SmtpServer the sockets we bound ourselves (so a bind failure surfaces at start).</summary>
internal sealed class GatedListenerFactory : IEndpointListenerFactory
{
    private readonly ListenerContext _listener;
    private readonly IReadOnlyDictionary<IEndpointDefinition, (TcpListener Socket, ListenerEndpoint Endpoint)> _bound;

    public GatedListenerFactory(ListenerContext listener, IReadOnlyDictionary<IEndpointDefinition, (TcpListener, ListenerEndpoint)> bound)
    {
        _listener = listener;
        _bound = bound;
    }

    public IEndpointListener CreateListener(IEndpointDefinition endpointDefinition)
    {
        var (socket, endpoint) = _bound[endpointDefinition];
        return new GatedEndpointListener(_listener, socket, endpoint);
    }
}

/// <summary>
/// Accepts connections and decides, before SmtpServer sees them, whether they get a session: the
/// session limits (total and per IP) and the limit book's connect check (blocked IP) answer here
/// with 421 or 554 and close. Each admitted connection gets its <see cref="SessionState"/>.
/// </summary>
internal sealed class GatedEndpointListener : IEndpointListener
{
    private readonly ListenerContext _listener;
    private readonly TcpListener _socket;
    private readonly ListenerEndpoint _endpoint;

    public GatedEndpointListener(ListenerContext listener, TcpListener socket, ListenerEndpoint endpoint)
    {
        _listener = listener;
        _socket = socket;
        _endpoint = endpoint;
    }

    public async Task<ISecurableDuplexPipe> GetPipeAsync(ISessionContext context, CancellationToken cancellationToken)
    {
        while (true)
        {
            TcpClient client;
            try
            {
                client = await _socket.AcceptTcpClientAsync(cancellationToken);
            }
            catch (Exception ex) when (ex is SocketException or ObjectDisposedException or InvalidOperationException && _listener.Draining)
            {
                // The socket was closed for shutdown: no more sessions; wait for SmtpServer to stop.
                await Task.Delay(Timeout.Infinite, cancellationToken);
                throw;
            }

            var remote = (IPEndPoint)client.Client.RemoteEndPoint!;
            var session = new SessionState(_listener, _endpoint, remote);
            if (_listener.Draining)
            {
                Refuse(client, session, 421, "4.3.2 Service shutting down", "shutdown");
                continue;
            }

            if (!_listener.Gate.TryEnter(session, out var reason))
            {
                Refuse(client, session, 421, "4.7.0 Too many connections, try again later", reason);
                continue;
            }

            if (_listener.Rules.Connect(session, () => session.Emit(EventKind.Connect, EventOutcome.Ok, 0, "", _endpoint.ImplicitTls ? "tls" : "plain",
                    mechanism: _endpoint.ImplicitTls ? "implicit-tls" : "")) is { } refusal)
            {
                _listener.Gate.Exit(session);
                Refuse(client, session, refusal.Code, refusal.StatusAndText, refusal.Reason, byLimit: true, closeReason: refusal.CloseReason);
                continue;
            }

            client.NoDelay = true;
            var pipe = new SessionPipe(client, session, () => _listener.Gate.Exit(session));
            session.Pipe = pipe;
            session.Attach(context);
            context.Properties[EndpointListener.LocalEndPointKey] = _socket.LocalEndpoint;
            context.Properties[EndpointListener.RemoteEndPointKey] = remote;
            return pipe;
        }
    }

    /// <summary>
    /// Refuses a connection before the greeting: one connect event says why (and a throttle event when
    /// a limit refused it — a detection signal), then the session's close event as for every session (the
    /// simulator's emulator, and so the training data, has always recorded one: without it the live
    /// features counted refused sessions nowhere in closes_1h and the shares built on it). The refusal is
    /// counted, and no log line is written per refusal: a flood of connections must not become a flood of
    /// log lines.
    /// </summary>
    private void Refuse(TcpClient client, SessionState session, int code, string text, string reason, bool byLimit = false, string? closeReason = null)
    {
        var status = text[..5];
        var outcome = code >= 500 ? EventOutcome.Reject : EventOutcome.TempFail;
        session.Emit(EventKind.Connect, outcome, (ushort)code, status, reason);
        if (byLimit)
        {
            session.Emit(EventKind.Throttle, outcome, (ushort)code, status, "connection refused: " + reason);
        }

        session.Finish("server closed: " + (closeReason ?? reason));
        _listener.Refusals.Count(reason);

        // Off the accept loop: a slow client must not hold up the next connection.
        _ = Task.Run(async () =>
        {
            using (client)
            {
                try
                {
                    using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(5));
                    var line = Encoding.ASCII.GetBytes($"{code} {text}\r\n");
                    await client.GetStream().WriteAsync(line, timeout.Token);
                    client.Client.Shutdown(SocketShutdown.Send);
                }
                catch (Exception ex) when (ex is IOException or SocketException or OperationCanceledException or ObjectDisposedException)
                {
                }
            }
        });
    }

    public void Dispose() => _socket.Stop();
}
