from nntrain.cli import main

main()
