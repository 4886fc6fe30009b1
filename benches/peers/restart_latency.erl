#!/usr/bin/env escript
%% Erlang/OTP peer of Flotilla's restart-latency benchmark. Usage:
%%   escript benches/peers/restart_latency.erl [N]      (N defaults to 2000)
%%
%% Methodology (must match the Rust benchmark; compared side by side):
%%   * a one_for_one supervisor, intensity 100000, period 1, with one
%%     permanent gen_server worker;
%%   * the worker's init/1 returns {continue, first}, so init never blocks the
%%     supervisor beyond the start handshake, and handle_continue(first) is
%%     the first thing the worker processes; there it takes
%%     monotonic_time(nanosecond) and sends {ready, Pid, T} to the probe;
%%   * on a `crash` message the worker takes monotonic_time(nanosecond), sends
%%     {crashed, Pid, T} to the probe and stops with reason `crash`;
%%   * the probe (this escript's main process) waits for ready, sends crash,
%%     waits for the crash time and the next ready, and records
%%     latency = ready time of the new worker - crash time of the old one;
%%   * 200 warm-up restarts are not counted, then N are; percentiles are taken
%%     from the sorted samples at index floor(P*(N-1)).

-module(restart_latency).
%% The script must be compiled, not interpreted: the supervisor and gen_server
%% call back into this module by name, so it has to be a real loaded module.
-mode(compile).
%% This module is the callback module of both the supervisor and the worker
%% (a gen_server). Only one behaviour is declared because both need init/1,
%% which is told apart by its argument.
-behaviour(supervisor).

-export([main/1, init/1, start_worker/1,
         handle_continue/2, handle_info/2, handle_call/3, handle_cast/2]).

-define(WARMUP, 200).
-define(DEFAULT_N, 2000).
-define(TIMEOUT_MS, 5000).

main(Args) ->
    N = case Args of
            [] -> ?DEFAULT_N;
            [A | _] -> list_to_integer(A)
        end,
    true = N > 0,
    %% Without this every restart emits a supervisor report and a crash report
    %% through logger, which would flood the output and dominate the timing.
    ok = logger:set_primary_config(level, none),
    io:format(standard_error,
              "# erlang restart_latency (OTP ~s, ~b schedulers online): "
              "one_for_one sup (intensity 100000, period 1), 1 permanent "
              "gen_server; latency = new worker's first message "
              "(handle_continue) time - old worker's crash time, "
              "monotonic ns; ~b warm-up + ~b measured restarts~n",
              [erlang:system_info(otp_release),
               erlang:system_info(schedulers_online), ?WARMUP, N]),
    {ok, _Sup} = supervisor:start_link(?MODULE, {sup, self()}),
    Pid0 = wait_ready(),
    {Pid1, _} = run(?WARMUP, Pid0, []),
    {_, Samples} = run(N, Pid1, []),
    report(N, lists:sort(Samples)).

%% Crash the current worker Count times; returns the last worker and the
%% latencies in nanoseconds.
run(0, Pid, Acc) ->
    {Pid, Acc};
run(Count, Pid, Acc) ->
    Pid ! crash,
    Tc = receive {crashed, Pid, T} -> T
         after ?TIMEOUT_MS -> error(no_crash_timestamp)
         end,
    {NewPid, Tr} = wait_ready_t(),
    run(Count - 1, NewPid, [Tr - Tc | Acc]).

wait_ready() ->
    {Pid, _} = wait_ready_t(),
    Pid.

wait_ready_t() ->
    receive {ready, Pid, T} -> {Pid, T}
    after ?TIMEOUT_MS -> error(no_ready)
    end.

report(N, Sorted) ->
    At = fun(P) -> lists:nth(trunc(P * (N - 1)) + 1, Sorted) end,
    Us = fun(Ns) -> io_lib:format("~.1f", [Ns / 1000]) end,
    io:format("erlang restart_latency n=~b p50_us=~s p99_us=~s mean_us=~s "
              "min_us=~s max_us=~s~n",
              [N, Us(At(0.50)), Us(At(0.99)), Us(lists:sum(Sorted) / N),
               Us(hd(Sorted)), Us(lists:last(Sorted))]).

%% ---- supervisor and gen_server callbacks --------------------------------

init({sup, Probe}) ->
    Flags = #{strategy => one_for_one, intensity => 100000, period => 1},
    Child = #{id => worker,
              start => {?MODULE, start_worker, [Probe]},
              restart => permanent,
              type => worker},
    {ok, {Flags, [Child]}};
init({worker, Probe}) ->
    %% Return at once; the timed "first message" runs after the supervisor
    %% has been released.
    {ok, Probe, {continue, first}}.

start_worker(Probe) ->
    gen_server:start_link(?MODULE, {worker, Probe}, []).

handle_continue(first, Probe) ->
    Probe ! {ready, self(), erlang:monotonic_time(nanosecond)},
    {noreply, Probe}.

handle_info(crash, Probe) ->
    Probe ! {crashed, self(), erlang:monotonic_time(nanosecond)},
    {stop, crash, Probe}.

handle_call(_Req, _From, Probe) -> {reply, ok, Probe}.
handle_cast(_Msg, Probe) -> {noreply, Probe}.
