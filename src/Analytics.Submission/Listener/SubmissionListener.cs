using System.Net.Sockets;
using System.Security.Authentication;
using System.Security.Cryptography.X509Certificates;
using Analytics.Events;
using Analytics.Limits;
using Analytics.Store;
using Analytics.Submission.Rules;
using Analytics.Submission.Listener;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using SmtpServer;
using SmtpServer.ComponentModel;
using SmtpHost = SmtpServer.SmtpServer;

namespace Analytics.Submission;

/// <summary>
/// The SMTP listener: one SmtpServer per role (submission, MX) over the configured endpoints, with
/// our sockets, reader/writer, filters, authenticator and spool plugged into it. Construct it with
/// explicit options in tests (endpoints on port 0; <see cref="Endpoints"/> tells the real ports), or
/// through <c>services.AddSubmission(configuration)</c> in a host.
/// </summary>
public sealed partial class SubmissionListener : IAsyncDisposable
{
    private readonly SubmissionOptions _options;
    private readonly SessionLimitOptions _limits;
    private readonly ILogger _logger;
    private readonly ListenerContext _context;
    private readonly List<(SmtpHost Server, Task Run)> _servers = [];
    private readonly List<TcpListener> _sockets = [];
    private readonly List<ListenerEndpoint> _endpoints = [];
    private X509Certificate2? _certificate;
    private int _state; // 0 new, 1 started, 2 stopped

    public SubmissionListener(
        SubmissionOptions options,
        LimitsOptions limitOptions,
        UserDirectory users,
        RecipientDirectory recipients,
        ILimitBook limits,
        IEventPublisher events,
        ILogger<SubmissionListener> logger,
        TimeProvider? time = null,
        Delivery.IMailQueue? queue = null)
    {
        // Built by hand (tests, benchmarks) rather than from a host's validated options: bad
        // configuration fails here, before any port opens, with every problem listed.
        ThrowIfInvalid(options, limitOptions);

        _options = options;
        _limits = limitOptions.Session;
        _logger = logger;
        _context = new ListenerContext
        {
            Options = options,
            LimitOptions = limitOptions,
            Rules = new SessionRules(limitOptions, limits, recipients, users),
            Time = time ?? TimeProvider.System,
            Events = events,
            Users = users,
            Recipients = recipients,
            Spool = new MailSpool(options.SpoolDirectory),
            Logger = logger,
            Gate = new ConnectionGate(limitOptions.Session),
            Refusals = new RefusalCounter(time ?? TimeProvider.System, logger),
            DataBudget = new DataBudget(limitOptions.Session.MaxDataInFlightBytes),
            Queue = queue,
        };
    }

    private static void ThrowIfInvalid(SubmissionOptions options, LimitsOptions limits)
    {
        var failures = SectionOptions.Validate(SubmissionOptions.SectionName, options)
            .Concat(new SubmissionOptionsValidator().Validate(null, options).Failures ?? [])
            .Concat(SectionOptions.Validate(LimitsOptions.SectionName, limits))
            .Concat(new LimitsOptionsValidator().Validate(null, limits).Failures ?? []).ToList();
        if (failures.Count > 0)
        {
            throw new OptionsValidationException(nameof(SubmissionOptions), typeof(SubmissionOptions), failures);
        }
    }

    /// <summary>The bound endpoints (with the real port when port 0 was configured). Empty before start.</summary>
    public IReadOnlyList<ListenerEndpoint> Endpoints => _endpoints;

    public int ActiveSessions => _context.Gate.Count;

    /// <summary>Connections refused before the greeting since start, by reason.</summary>
    public IReadOnlyDictionary<string, long> Refusals => _context.Refusals.Totals;

    public string SpoolDirectory => _context.Spool.Directory;

    /// <summary>Idle sessions (before AUTH or a transaction) closed to give their slot to a new connection in a full pool.</summary>
    public long IdleSessionsEvicted => _context.Gate.Evicted;

    /// <summary>Bytes of messages being received right now (DATA not finished), across both roles; they are on disk, not in memory.</summary>
    public long DataBytesInFlight => _context.DataBudget.Current;

    /// <summary>The highest <see cref="DataBytesInFlight"/> since start.</summary>
    public long DataBytesInFlightPeak => _context.DataBudget.Peak;

    /// <summary>Messages refused with 452 4.3.1 because the bytes in flight reached <c>Limits:Session:MaxDataInFlightBytes</c>.</summary>
    public long DataRefusedOverCap => _context.DataBudget.Refused;

    /// <summary>Loads the certificate, binds every endpoint (throwing if one cannot be bound) and starts serving.</summary>
    public Task StartAsync(CancellationToken cancellationToken = default)
    {
        if (Interlocked.CompareExchange(ref _state, 1, 0) != 0)
        {
            throw new InvalidOperationException("The listener was started already.");
        }

        cancellationToken.ThrowIfCancellationRequested();
        _certificate = CertificateProvider.Load(_options.Tls, _options.KeyDirectory, _options.ServerName, _context.Time);
        var plan = new List<(ListenerRole Role, string Text, bool ImplicitTls)>();
        plan.AddRange(_options.EffectiveSubmissionEndpoints.Select(e => (ListenerRole.Submission, e, false)));
        plan.AddRange(_options.EffectiveImplicitTlsEndpoints.Select(e => (ListenerRole.Submission, e, true)));
        plan.AddRange(_options.EffectiveMxEndpoints.Select(e => (ListenerRole.Mx, e, false)));

        var byRole = new Dictionary<ListenerRole, Dictionary<IEndpointDefinition, (TcpListener, ListenerEndpoint)>>();
        try
        {
            foreach (var (role, text, implicitTls) in plan)
            {
                var requested = ListenerEndpoint.Parse(text);
                var socket = new TcpListener(requested);
                try
                {
                    socket.Start(backlog: 512);
                }
                catch (SocketException ex)
                {
                    throw new InvalidOperationException($"Cannot listen on {text} ({role.ToString().ToLowerInvariant()}): {ex.Message}", ex);
                }

                _sockets.Add(socket);
                var endpoint = new ListenerEndpoint(role, (System.Net.IPEndPoint)socket.LocalEndpoint, implicitTls);
                _endpoints.Add(endpoint);
                var definition = new EndpointDefinitionBuilder()
                    .Endpoint(endpoint.EndPoint)
                    .IsSecure(implicitTls)
                    .AuthenticationRequired(role == ListenerRole.Submission)
                    .AllowUnsecureAuthentication(role == ListenerRole.Submission && _options.AllowInsecureAuth)
                    .SessionTimeout(_limits.SessionTimeout)
                    .Certificate(_certificate)
                    .SupportedSslProtocols(SslProtocols.Tls12 | SslProtocols.Tls13)
                    .Build();
                if (!byRole.TryGetValue(role, out var map))
                {
                    byRole[role] = map = [];
                }

                map[definition] = (socket, endpoint);
            }
        }
        catch
        {
            StopSockets();
            throw;
        }

        foreach (var (role, map) in byRole)
        {
            var builder = new SmtpServerOptionsBuilder()
                .ServerName(_options.ServerName)
                .MaxMessageSize(_limits.MaxMessageSize, MaxMessageSizeHandling.Ignore)
                .MaxRetryCount(int.MaxValue) // error budgets are ours (commands per session, defenses)
                .MaxAuthenticationAttempts(_limits.MaxAuthFailuresPerSession)
                .CommandWaitTimeout(_limits.CommandTimeout);
            foreach (var definition in map.Keys)
            {
                builder.Endpoint(definition);
            }

            var services = new ServiceProvider();
            services.Add(new GatedListenerFactory(_context, map));
            services.Add(new CommandFactory());
            services.Add(new MailboxFilter());
            services.Add(new SpoolMessageStore());
            services.Add(new Authenticator());
            var server = new SmtpHost(builder.Build(), services);
            server.SessionCompleted += (_, e) => Finished(e.Context, "server closed");
            server.SessionCancelled += (_, e) => Finished(e.Context, _context.Draining ? "server closed: shutdown" : "timeout: session");
            server.SessionFaulted += (_, e) => Faulted(e.Context, e.Exception);
            _servers.Add((server, server.StartAsync(CancellationToken.None)));
        }

        foreach (var endpoint in _endpoints)
        {
            LogListening(_logger, endpoint.Role, endpoint.EndPoint, endpoint.ImplicitTls);
        }

        return Task.CompletedTask;
    }

    /// <summary>
    /// Graceful stop: no new connections; sessions between transactions get 421 4.3.2 at once;
    /// transactions in flight may finish until <see cref="SessionLimitOptions.ShutdownDeadline"/>
    /// (or <paramref name="cancellationToken"/>), after which the rest are cut.
    /// </summary>
    public async Task StopAsync(CancellationToken cancellationToken = default)
    {
        if (Interlocked.Exchange(ref _state, 2) != 1)
        {
            return;
        }

        _context.Draining = true;
        StopSockets();
        foreach (var session in _context.Gate.Sessions)
        {
            if (!session.InTransaction && session.Phase == SessionPhase.Command)
            {
                session.Pipe?.Interrupt();
            }
        }

        var deadline = _context.Time.GetTimestamp();
        while (_context.Gate.Count > 0 && !cancellationToken.IsCancellationRequested
               && _context.Time.GetElapsedTime(deadline) < _limits.ShutdownDeadline)
        {
            try
            {
                await Task.Delay(TimeSpan.FromMilliseconds(20), cancellationToken);
            }
            catch (OperationCanceledException)
            {
                break;
            }
        }

        var cut = _context.Gate.Count;
        foreach (var (server, _) in _servers)
        {
            server.Shutdown();
        }

        try
        {
            await Task.WhenAll(_servers.Select(s => s.Run)).WaitAsync(TimeSpan.FromSeconds(10), CancellationToken.None);
        }
        catch (Exception ex)
        {
            LogStopProblem(_logger, ex);
        }

        LogStopped(_logger, cut);
        _certificate?.Dispose();
    }

    public async ValueTask DisposeAsync()
    {
        if (Volatile.Read(ref _state) == 1)
        {
            await StopAsync();
        }

        StopSockets();
    }

    private void StopSockets()
    {
        foreach (var socket in _sockets)
        {
            try
            {
                socket.Stop();
            }
            catch (SocketException)
            {
            }
        }
    }

    private static void Finished(ISessionContext context, string reason)
    {
        if (context.Properties.TryGetValue(SessionState.PropertyKey, out var value) && value is SessionState session)
        {
            session.Finish(reason);
        }
    }

    private void Faulted(ISessionContext context, Exception exception)
    {
        if (!context.Properties.TryGetValue(SessionState.PropertyKey, out var value) || value is not SessionState session)
        {
            LogAcceptFailed(_logger, exception);
            return;
        }

        var root = exception is AggregateException { InnerException: { } inner } ? inner : exception;
        if (root is IOException or SocketException or ObjectDisposedException)
        {
            session.ClientEof = true;
            session.Finish("client dropped");
        }
        else if (root is AuthenticationException)
        {
            session.ServerCloses("TLS handshake failed");
            session.Finish("server closed");
        }
        else if (root is MessageTooLargeException)
        {
            session.Finish("server closed");
        }
        else
        {
            LogSessionFaulted(_logger, root, session.Id, session.Role, session.ClientIp);
            session.ServerCloses("error " + root.GetType().Name);
            session.Finish("server closed");
        }
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "SMTP {Role} listening on {EndPoint} (implicit TLS: {ImplicitTls})")]
    private static partial void LogListening(ILogger logger, ListenerRole role, System.Net.IPEndPoint endPoint, bool implicitTls);

    [LoggerMessage(Level = LogLevel.Information, Message = "SMTP listener stopped; {Cut} sessions were still open at the deadline")]
    private static partial void LogStopped(ILogger logger, int cut);

    [LoggerMessage(Level = LogLevel.Warning, Message = "SMTP listener did not stop cleanly")]
    private static partial void LogStopProblem(ILogger logger, Exception exception);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Accepting an SMTP connection failed")]
    private static partial void LogAcceptFailed(ILogger logger, Exception exception);

    [LoggerMessage(Level = LogLevel.Error, Message = "SMTP session {SessionId:x16} ({Role}, {ClientIp}) failed")]
    private static partial void LogSessionFaulted(ILogger logger, Exception exception, ulong sessionId, ListenerRole role, System.Net.IPAddress clientIp);
}
