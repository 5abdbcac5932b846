using Analytics.Cli;

return await AnalyticsCli.RunAsync(args, CliIO.Console, server: null, CancellationToken.None);
